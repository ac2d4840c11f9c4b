// Test harness: std::sort / std::partial_sort from this g++'s libstdc++ on llama_token_data-
// like records ordered by logit descending, as llama.cpp sorts candidates. Prints the ids
// in their final order. Not part of the library.
//
// stdin (binary): int32 n, middle (-1: std::sort); then float32 logits [n].
// stdout (binary): int32 ids [n] (ids are the input positions).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

struct rec { int32_t id; float logit; float p; };

int main() {
    int32_t hdr[2];
    if (fread(hdr, sizeof(int32_t), 2, stdin) != 2) return 2;
    const int32_t n = hdr[0], middle = hdr[1];
    std::vector<float> keys(n);
    if (fread(keys.data(), sizeof(float), n, stdin) != (size_t) n) return 2;
    std::vector<rec> v(n);
    for (int32_t i = 0; i < n; i++) v[i] = rec{ i, keys[i], 0.0f };
    auto comp = [](const rec & a, const rec & b) { return a.logit > b.logit; };
    if (middle < 0) std::sort(v.begin(), v.end(), comp);
    else std::partial_sort(v.begin(), v.begin() + middle, v.end(), comp);
    for (const rec & r : v) fwrite(&r.id, sizeof(int32_t), 1, stdout);
    return 0;
}
