// Test harness: llama.cpp's own diffusion_generate() (examples/diffusion/diffusion.cpp,
// compiled alongside this file from the llama.cpp tree) driven by synthetic logits.
//
// The handful of context/model/batch/log functions diffusion.cpp calls are defined here
// (the library is linked with -Bsymbolic so these win over libllama's); the sampler
// chain still comes from the real libllama.so. Logits come from a callback, so a Python
// test can feed the same logits to Hoshikage's loop and to the reference. Not part of
// the library.
// diffusion.cpp is #included (not linked) so its static helpers can be exported below.
#include "diffusion.cpp"
#include "common.h"
#include "log.h"

#include <cstdint>
#include <vector>

typedef void (*hk_logits_cb)(const int32_t * tokens, int32_t n_tokens, float * logits, void * ud);

namespace {
struct fake_ctx {
    int32_t            n_vocab;
    hk_logits_cb       cb;
    void *             ud;
    std::vector<float> logits;
};
fake_ctx * g_ctx = nullptr;
}

// --- llama.h surface used by diffusion_generate --------------------------------------------
const llama_model * llama_get_model(const llama_context *) { return reinterpret_cast<const llama_model *>(g_ctx); }
const llama_vocab * llama_model_get_vocab(const llama_model *) { return reinterpret_cast<const llama_vocab *>(g_ctx); }
int32_t llama_vocab_n_tokens(const llama_vocab *) { return g_ctx->n_vocab; }
void llama_set_causal_attn(llama_context *, bool) {}
float * llama_get_logits(llama_context *) { return g_ctx->logits.data(); }
int32_t llama_process(llama_context *, llama_process_type, llama_batch_ext * batch) {
    const common_batch * b = reinterpret_cast<const common_batch *>(batch);
    std::vector<int32_t> toks;
    for (const auto & t : b->tokens) toks.push_back(t.id);
    g_ctx->logits.assign((size_t) toks.size() * g_ctx->n_vocab, 0.0f);
    g_ctx->cb(toks.data(), (int32_t) toks.size(), g_ctx->logits.data(), g_ctx->ud);
    return 0;
}

// --- common.h / log.h surface ------------------------------------------------------------
common_batch::common_batch(llama_context *) {}
void common_batch::clear() { tokens.clear(); }
int32_t common_batch::add(llama_token id, llama_pos pos, llama_seq_id seq_id, bool output) {
    tokens.push_back({ id, { pos, 0, 0, 0 }, seq_id, output, { nullptr, 0, 0 }, {} });
    return size() - 1;
}
llama_batch_ext * common_batch::get_sub_batch(int32_t, int32_t) { return reinterpret_cast<llama_batch_ext *>(this); }
int common_log_get_verbosity_thold(void) { return -1000; }
common_log * common_log_main() { return nullptr; }
void common_log_add(common_log *, ggml_log_level, const char *, ...) {}

// --- entry point ---------------------------------------------------------------------------
struct hk_loop_params {
    int32_t steps; float temperature; int32_t mask_token_id; int32_t seed; int32_t shift_logits;
    float top_p; int32_t top_k; int32_t algorithm; int32_t schedule; float cfg_scale; float eps;
    int32_t block_length; float alg_temp; int32_t add_gumbel_noise; int32_t max_length;
};

extern "C" __attribute__((visibility("default")))
int32_t hk_loop_ref(const int32_t * input, int32_t n_input, int32_t * output, const hk_loop_params * p,
                    int32_t n_vocab, hk_logits_cb cb, void * ud, diffusion_step_callback_t step_cb,
                    void * step_ud) {
    fake_ctx ctx{ n_vocab, cb, ud, {} };
    g_ctx = &ctx;
    diffusion_params params;
    params.steps = p->steps;               params.temperature = p->temperature;
    params.mask_token_id = p->mask_token_id; params.seed = p->seed;
    params.shift_logits = p->shift_logits != 0;
    params.top_p = p->top_p;               params.top_k = p->top_k;
    params.algorithm = static_cast<diffusion_algorithm>(p->algorithm);
    params.schedule = static_cast<diffusion_transfer_schedule>(p->schedule);
    params.cfg_scale = p->cfg_scale;       params.eps = p->eps;
    params.block_length = p->block_length; params.alg_temp = p->alg_temp;
    params.add_gumbel_noise = p->add_gumbel_noise != 0;
    params.max_length = p->max_length;
    params.step_callback = step_cb;        params.step_callback_user_data = step_ud;
    int32_t n_generated = 0;
    diffusion_generate(reinterpret_cast<llama_context *>(&ctx), input, output, n_input, params, n_generated);
    g_ctx = nullptr;
    return n_generated;
}

// The static schedule helpers, for direct comparison.
extern "C" __attribute__((visibility("default")))
int32_t hk_transfer_count(int32_t step, int32_t total_steps, int32_t remaining, int32_t schedule, float eps) {
    return calculate_transfer_count(step, total_steps, remaining,
                                    static_cast<diffusion_transfer_schedule>(schedule), eps);
}

extern "C" __attribute__((visibility("default")))
void hk_num_transfer_tokens(int32_t mask_count, int32_t steps, int32_t * out) {
    const std::vector<int32_t> v = get_num_transfer_tokens(mask_count, steps);
    for (int32_t i = 0; i < steps; i++) out[i] = v[i];
}
