/* benchmarks/run.py, row 6: the cost of reading the clock, timed inside.
 *
 *   clock_loop CLOCK CALLS    CLOCK: realtime | monotonic
 *
 * Calls clock_gettime through glibc (so through the vDSO when there is one,
 * and through libfaketime under faketime) CALLS times after a warm-up of a
 * tenth of that, and prints the nanoseconds per call. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "realtime") && strcmp(argv[1], "monotonic")) || atol(argv[2]) <= 0) {
        fprintf(stderr, "usage: clock_loop realtime|monotonic CALLS\n");
        return 2;
    }
    clockid_t id = strcmp(argv[1], "realtime") == 0 ? CLOCK_REALTIME : CLOCK_MONOTONIC;
    long calls = atol(argv[2]);
    struct timespec ts;
    long sink = 0;
    for (long i = 0; i < calls / 10 + 1; i++) {
        clock_gettime(id, &ts);
        sink += ts.tv_nsec;
    }
    /* timed with CLOCK_MONOTONIC: under the benchmark's time view (an offset,
     * rate 1) it runs at the host's pace, served by the time namespace */
    double start = now_ns();
    for (long i = 0; i < calls; i++) {
        clock_gettime(id, &ts);
        sink += ts.tv_nsec;
    }
    double per_call = (now_ns() - start) / (double)calls;
    printf("%ld %.1f\n", sink & 1, per_call);
    return 0;
}
