// How fast fresh anonymous memory fills on this machine, with and without transparent
// huge pages (perf/state_transfer.md, "Huge pages for the frames a transfer lands in").
// Maps N MiB, advises MADV_HUGEPAGE when asked, touches one byte per 4 KiB (the first
// touch: page faults and the kernel's zeroing), then writes it all once more (memory
// already mapped: what a reused buffer costs).
//
//   gcc -O2 -o /tmp/first_touch perf/first_touch.c
//   /tmp/first_touch 800 0; /tmp/first_touch 800 1      # MiB, huge pages 0/1
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MIB HUGE(0|1)\n", argv[0]);
        return 2;
    }
    size_t bytes = (size_t)atol(argv[1]) << 20;
    int huge = atoi(argv[2]);
    size_t align = 2 << 20;
    char *mapped = mmap(0, bytes + align, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mapped == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    char *start = (char *)(((size_t)mapped + align - 1) & ~(align - 1));
    if (huge && madvise(start, bytes, MADV_HUGEPAGE) != 0) perror("madvise");
    double t0 = now();
    for (size_t i = 0; i < bytes; i += 4096) start[i] = 1;
    double t1 = now();
    memset(start, 2, bytes);
    double t2 = now();
    printf("huge=%d %zu MiB: first touch %.3f s (%.2f GB/s); written again %.3f s (%.2f GB/s)\n",
           huge, bytes >> 20, t1 - t0, bytes / (t1 - t0) / 1e9, t2 - t1, bytes / (t2 - t1) / 1e9);
    return 0;
}
