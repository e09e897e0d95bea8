/* benchmarks/run.py, row 6: the cost of reading the clock, timed inside.
 *
 *   clock_loop WHAT CALLS    WHAT: realtime | monotonic | futex
 *
 * realtime, monotonic: calls clock_gettime through glibc (so through the
 * vDSO when there is one, and through libfaketime under faketime). futex: a
 * futex wait with a relative timeout whose word does not match, so that the
 * kernel returns EAGAIN at once (what a Go runtime or a timed lock does, less
 * the waiting). CALLS times after a warm-up of a tenth of that; prints the
 * nanoseconds per call. */
#include <linux/futex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static long one_call(int futex, clockid_t id)
{
    static int word;
    static const struct timespec timeout = {1, 0};
    struct timespec ts = {0, 0};
    if (futex)
        return syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 1, &timeout, NULL, 0); /* EAGAIN: -1 */
    clock_gettime(id, &ts);
    return ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "realtime") && strcmp(argv[1], "monotonic") && strcmp(argv[1], "futex")) ||
        atol(argv[2]) <= 0) {
        fprintf(stderr, "usage: clock_loop realtime|monotonic|futex CALLS\n");
        return 2;
    }
    int futex = strcmp(argv[1], "futex") == 0;
    clockid_t id = strcmp(argv[1], "realtime") == 0 ? CLOCK_REALTIME : CLOCK_MONOTONIC;
    long calls = atol(argv[2]);
    long sink = 0;
    for (long i = 0; i < calls / 10 + 1; i++)
        sink += one_call(futex, id);
    /* timed with CLOCK_MONOTONIC: under the benchmark's time view (an offset,
     * rate 1) it runs at the host's pace, served by the time namespace */
    double start = now_ns();
    for (long i = 0; i < calls; i++)
        sink += one_call(futex, id);
    double per_call = (now_ns() - start) / (double)calls;
    printf("%ld %.1f\n", sink & 1, per_call);
    return 0;
}
