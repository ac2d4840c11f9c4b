// Test harness: runs llama.cpp's own sampler chain (top_k -> top_p -> temp -> dist, as
// diffusion_generate builds it) over rows of logits through the public llama.h API, and
// prints what the diffusion loop reads back. Compiled by tests/sampling at test time
// against the libllama.so of the cached build; not part of the library.
//
// stdin (binary): int32 n_rows, n_vocab, top_k; float top_p, temperature; uint32 seed;
//                 int32 bench_reps; then float32 logits [n_rows, n_vocab].
// stdout (binary), per row: int32 selected, size, sorted; then size x (int32 id, float p).
// With bench_reps > 0 it instead runs the rows bench_reps times and prints the mean
// seconds per row (text).
#include "llama.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

template <typename T> static T rd() {
    T v;
    if (fread(&v, sizeof(T), 1, stdin) != 1) { fprintf(stderr, "short read\n"); std::exit(2); }
    return v;
}

int main() {
    const int32_t n_rows = rd<int32_t>(), n_vocab = rd<int32_t>(), top_k = rd<int32_t>();
    const float top_p = rd<float>(), temperature = rd<float>();
    const uint32_t seed = rd<uint32_t>();
    const int32_t bench_reps = rd<int32_t>();
    std::vector<float> logits((size_t) n_rows * n_vocab);
    if (fread(logits.data(), sizeof(float), logits.size(), stdin) != logits.size()) return 2;

    llama_sampler * chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
    if (top_k > 0) llama_sampler_chain_add(chain, llama_sampler_init_top_k(top_k));
    if (top_p < 1.0f) llama_sampler_chain_add(chain, llama_sampler_init_top_p(top_p, 1));
    if (temperature > 0.0f) llama_sampler_chain_add(chain, llama_sampler_init_temp(temperature));
    llama_sampler_chain_add(chain, llama_sampler_init_dist(seed));

    std::vector<llama_token_data> cand(n_vocab);
    auto run_row = [&](int32_t r) {
        const float * row = logits.data() + (size_t) r * n_vocab;
        for (int32_t t = 0; t < n_vocab; t++) cand[t] = llama_token_data{ t, row[t], 0.0f };
        llama_token_data_array cur = { cand.data(), cand.size(), -1, false };
        llama_sampler_apply(chain, &cur);
        return cur;
    };
    if (bench_reps > 0) {
        auto t0 = std::chrono::steady_clock::now();
        volatile int64_t sink = 0;
        for (int rep = 0; rep < bench_reps; rep++)
            for (int32_t r = 0; r < n_rows; r++) sink += run_row(r).selected;
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        printf("%.9f\n", s / ((double) bench_reps * n_rows));
        return 0;
    }
    for (int32_t r = 0; r < n_rows; r++) {
        llama_token_data_array cur = run_row(r);
        const int32_t hdr[3] = { (int32_t) cur.selected, (int32_t) cur.size, (int32_t) cur.sorted };
        fwrite(hdr, sizeof(int32_t), 3, stdout);
        for (size_t i = 0; i < cur.size; i++) {
            fwrite(&cur.data[i].id, sizeof(int32_t), 1, stdout);
            fwrite(&cur.data[i].p, sizeof(float), 1, stdout);
        }
    }
    llama_sampler_free(chain);
    return 0;
}
