/* llama.cpp's own diffusion_generate() in a process without Python, for the CFG benchmarks.
 *
 * llama-diffusion-cli parses --diffusion-cfg-scale but never passes it on, so the reference
 * with CFG on can only be reached through the project's shim (hk_ref_diffusion_generate in
 * native/diffusion_ref.cpp). This driver calls it the way llama-diffusion-cli calls
 * diffusion_generate: one context with n_ubatch = n_batch = the canvas, all threads given.
 * The prompt arrives already tokenized (hoshikage.prepare_prompt, which formats it as
 * llama-diffusion-cli does), so no chat-template code is needed here.
 *
 * usage: ref_driver MODEL THREADS CANVAS STEPS ALGORITHM SCHEDULE EPS BLOCK TEMP TOP_K TOP_P
 *                   SEED CFG_SCALE ALG_TEMP GUMBEL TOKEN...
 * prints: "total_ms: X", "tokens: ..." (the whole canvas) and "text:" + the canvas after the
 *         prompt, detokenized as llama-diffusion-cli prints it.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llama.h"

struct hk_ref_params {  /* must match native/diffusion_ref.cpp */
    int32_t steps;
    float   temperature;
    int32_t mask_token_id;
    int32_t seed;
    int32_t shift_logits;
    float   top_p;
    int32_t top_k;
    int32_t algorithm;
    int32_t schedule;
    float   cfg_scale;
    float   eps;
    int32_t block_length;
    float   alg_temp;
    int32_t add_gumbel_noise;
    int32_t max_length;
};

int32_t hk_ref_diffusion_generate(struct llama_context * ctx, const llama_token * input, int32_t n_input,
                                  llama_token * output, const struct hk_ref_params * p, void * callback,
                                  void * user_data);

static void quiet(enum ggml_log_level level, const char * text, void * user) {
    (void) user;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char ** argv) {
    if (argc < 17) {
        fprintf(stderr, "usage: %s MODEL THREADS CANVAS STEPS ALGORITHM SCHEDULE EPS BLOCK TEMP TOP_K TOP_P "
                        "SEED CFG_SCALE ALG_TEMP GUMBEL TOKEN...\n", argv[0]);
        return 2;
    }
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model * model = llama_model_load_from_file(argv[1], llama_model_default_params());
    if (!model) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    const int threads = atoi(argv[2]);
    const int canvas  = atoi(argv[3]);
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = cp.n_batch = cp.n_ubatch = (uint32_t) canvas;
    cp.n_threads = cp.n_threads_batch = threads;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "cannot create a context\n");
        return 1;
    }
    const struct llama_vocab * vocab = llama_model_get_vocab(model);

    char shift[8] = "true";  /* llama-diffusion-cli's default when the key is absent */
    llama_model_meta_val_str(model, "diffusion.shift_logits", shift, sizeof(shift));

    struct hk_ref_params p = {
        .steps = atoi(argv[4]), .algorithm = atoi(argv[5]), .schedule = atoi(argv[6]),
        .eps = (float) atof(argv[7]), .block_length = atoi(argv[8]), .temperature = (float) atof(argv[9]),
        .top_k = atoi(argv[10]), .top_p = (float) atof(argv[11]), .seed = (int32_t) strtoll(argv[12], NULL, 10),
        .cfg_scale = (float) atof(argv[13]), .alg_temp = (float) atof(argv[14]),
        .add_gumbel_noise = atoi(argv[15]), .mask_token_id = llama_vocab_mask(vocab),
        .shift_logits = strcmp(shift, "true") == 0, .max_length = canvas,
    };
    const int n_input = argc - 16;
    llama_token * input  = calloc((size_t) n_input, sizeof(llama_token));
    llama_token * output = calloc((size_t) canvas, sizeof(llama_token));
    for (int i = 0; i < n_input; i++) input[i] = atoi(argv[16 + i]);

    const double t0 = now_ms();
    const int32_t n = hk_ref_diffusion_generate(ctx, input, n_input, output, &p, NULL, NULL);
    const double total = now_ms() - t0;
    if (n != canvas) {
        fprintf(stderr, "diffusion_generate failed (returned %d)\n", n);
        return 1;
    }
    printf("total_ms: %.3f\ntokens:", total);
    for (int i = 0; i < canvas; i++) printf(" %d", output[i]);
    const int32_t cap = 64 * canvas + 64;
    char * text = malloc((size_t) cap);
    int32_t len = llama_detokenize(vocab, output + n_input, canvas - n_input, text, cap, false, false);
    if (len < 0) len = 0;
    printf("\ntext:%.*s\n", len, text);

    free(text);
    free(input);
    free(output);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
