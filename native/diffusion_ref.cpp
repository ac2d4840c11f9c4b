// A flat C entry point around llama.cpp's reference diffusion_generate().
//
// diffusion_params is a C++ struct with default member initialisers, which cffi cannot
// declare; this shim takes a plain C struct instead and copies every field across, so
// tests can reach cfg_scale and alg_temp, which llama-diffusion-cli never passes on.
#include "diffusion.h"

#include <cstdint>

extern "C" {

struct hk_ref_params {
    int32_t steps;
    float   temperature;
    int32_t mask_token_id;
    int32_t seed;
    int32_t shift_logits;      // bool
    float   top_p;
    int32_t top_k;
    int32_t algorithm;         // enum diffusion_algorithm
    int32_t schedule;          // enum diffusion_transfer_schedule
    float   cfg_scale;
    float   eps;
    int32_t block_length;
    float   alg_temp;
    int32_t add_gumbel_noise;  // bool
    int32_t max_length;        // canvas length, prompt included
};

typedef bool (*hk_ref_step_callback)(int32_t step, int32_t total_steps, const llama_token * tokens,
                                     int32_t n_tokens, void * user_data);

// Writes max_length tokens to output; returns the number generated (0 on failure), as
// diffusion_generate() reports it.
__attribute__((visibility("default")))
int32_t hk_ref_diffusion_generate(llama_context * ctx, const llama_token * input, int32_t n_input,
                                  llama_token * output, const hk_ref_params * p,
                                  hk_ref_step_callback callback, void * user_data) {
    diffusion_params params;
    params.steps                   = p->steps;
    params.temperature             = p->temperature;
    params.mask_token_id           = p->mask_token_id;
    params.step_callback           = callback;
    params.step_callback_user_data = user_data;
    params.seed                    = p->seed;
    params.visual_mode             = false;
    params.shift_logits            = p->shift_logits != 0;
    params.top_p                   = p->top_p;
    params.top_k                   = p->top_k;
    params.algorithm               = static_cast<diffusion_algorithm>(p->algorithm);
    params.schedule                = static_cast<diffusion_transfer_schedule>(p->schedule);
    params.cfg_scale               = p->cfg_scale;
    params.eps                     = p->eps;
    params.block_length            = p->block_length;
    params.alg_temp                = p->alg_temp;
    params.add_gumbel_noise        = p->add_gumbel_noise != 0;
    params.max_length              = p->max_length;

    int32_t n_generated = 0;
    diffusion_generate(ctx, input, output, n_input, params, n_generated);
    return n_generated;
}

}  // extern "C"
