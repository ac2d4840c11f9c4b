// Test harness: std::mt19937 and libstdc++'s uniform_real_distribution draws.
// argv: seed n. Prints n raw outputs, n float draws, n double draws (each from a fresh
// engine seeded with seed), then the float / double canonical values of edge outputs.
#include <cstdio>
#include <cstdlib>
#include <random>

// An "engine" that replays fixed outputs, to reach generate_canonical's edge cases.
struct replay {
    typedef unsigned long result_type;
    const unsigned long * v; int i = 0;
    static constexpr result_type min() { return 0; }
    static constexpr result_type max() { return 0xFFFFFFFFul; }
    result_type operator()() { return v[i++]; }
};

int main(int argc, char ** argv) {
    const unsigned long seed = strtoul(argv[1], nullptr, 10);
    const int n = atoi(argv[2]);
    std::mt19937 a(seed), b(seed), c(seed);
    for (int i = 0; i < n; i++) printf("%lu\n", (unsigned long) a());
    std::uniform_real_distribution<float> uf(0.0f, 1.0f);
    for (int i = 0; i < n; i++) printf("%a\n", (double) uf(b));
    std::uniform_real_distribution<double> ud(0.0, 1.0);
    for (int i = 0; i < n; i++) printf("%a\n", ud(c));
    const unsigned long edges[] = { 0ul, 1ul, 0xFFFFFF7Ful, 0xFFFFFF80ul, 0xFFFFFFFFul, 0x80000000ul };
    for (unsigned long e : edges) {
        const unsigned long two[2] = { e, e };
        replay rf{ two }, rd{ two };
        printf("%a %a\n", (double) std::generate_canonical<float, 24>(rf), std::generate_canonical<double, 53>(rd));
    }
    return 0;
}
