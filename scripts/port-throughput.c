/*
 * How many 512-bit instructions of a kind this CPU issues per cycle, alone and beside another
 * kind: which execution ports the one-token ternary kernels' operations compete for
 * (docs/engine.md, "Ports"). Each loop body is sixteen (or thirty) independent instructions;
 * the clock comes from a dependent chain of 512-bit adds (one a cycle).
 *
 *   gcc -O1 -mavx512f -o /tmp/port-throughput scripts/port-throughput.c && /tmp/port-throughput
 *
 * Needs AVX-512 F, VNNI and GFNI (the assembler accepts the mnemonics whatever -m flags say).
 */
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define N 50000000L
#define X(op, a, b) op " %%zmm30, %%zmm31, %%zmm" #a "\n" op " %%zmm30, %%zmm31, %%zmm" #b "\n"
#define R16(op) X(op, 0, 1) X(op, 2, 3) X(op, 4, 5) X(op, 6, 7) X(op, 8, 9) X(op, 10, 11) X(op, 12, 13) X(op, 14, 15)
#define R14B(op) X(op, 16, 17) X(op, 18, 19) X(op, 20, 21) X(op, 22, 23) X(op, 24, 25) X(op, 26, 27) X(op, 28, 29)
#define CL "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", \
           "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19",       \
           "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29"
#define BENCH(name, body, nops)                                                              \
    {                                                                                        \
        double t = now();                                                                    \
        for (long i = 0; i < N; i++) {                                                       \
            __asm__ volatile(body ::: CL);                                                   \
        }                                                                                    \
        double dt = now() - t;                                                               \
        printf("%-24s %5.2f cycles a loop of %2d: %.2f a cycle\n", name, dt * ghz * 1e9 / N, \
               nops, nops / (dt * ghz * 1e9 / N));                                           \
    }

int main(void) {
    double t = now();
    for (long i = 0; i < N; i++) {
        __asm__ volatile("vpaddd %%zmm0,%%zmm0,%%zmm0\n vpaddd %%zmm0,%%zmm0,%%zmm0\n"
                         "vpaddd %%zmm0,%%zmm0,%%zmm0\n vpaddd %%zmm0,%%zmm0,%%zmm0\n" ::: "xmm0");
    }
    double ghz = 4.0 * N / (now() - t) / 1e9;
    printf("clock from a dependent chain of 512-bit adds: %.2f GHz\n", ghz);
    BENCH("vpdpbusd", R16("vpdpbusd"), 16);
    BENCH("vgf2p8affineqb", R16("vgf2p8affineqb $0,"), 16);
    BENCH("vpunpckldq", R16("vpunpckldq"), 16);
    BENCH("vpmaddwd", R16("vpmaddwd"), 16);
    BENCH("vpackssdw", R16("vpackssdw"), 16);
    BENCH("vpdpbusd + gf2p8", R16("vpdpbusd") R14B("vgf2p8affineqb $0,"), 30);
    BENCH("vpdpbusd + vpandq", R16("vpdpbusd") R14B("vpandq"), 30);
    BENCH("vpdpbusd + vshufi64x2", R16("vpdpbusd") R14B("vshufi64x2 $0x88,"), 30);
    BENCH("gf2p8 + vpunpckldq", R16("vgf2p8affineqb $0,") R14B("vpunpckldq"), 30);
    BENCH("gf2p8 + vshufi64x2", R16("vgf2p8affineqb $0,") R14B("vshufi64x2 $0x88,"), 30);
    BENCH("gf2p8 + vpmaddwd", R16("vgf2p8affineqb $0,") R14B("vpmaddwd"), 30);
    BENCH("vpunpckldq + vshufi64x2", R16("vpunpckldq") R14B("vshufi64x2 $0x88,"), 30);
    return 0;
}
