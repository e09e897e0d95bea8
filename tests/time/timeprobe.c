/* The time tests' probe: reads every clock a program can read, or waits, and
 * prints what it saw. Built by tests/test_time.py with gcc (dynamic: glibc's
 * clock_gettime goes through the vDSO when the kernel offers one).
 *
 *   timeprobe now          one line per source: "<name> <seconds>"
 *   timeprobe spin SECS    REALTIME, then SECS of CPU time busy (no sleep), then REALTIME
 *   timeprobe timerfd SECS a relative timerfd of SECS on MONOTONIC: the clock before and after
 *   timeprobe condwait SECS pthread_cond_timedwait (an absolute REALTIME futex deadline) SECS
 *                          from now: the clock before and after
 *   timeprobe remaining    what the kernel says is left: of a 5 s timerfd (timerfd_gettime), of a
 *                          5 s ITIMER_REAL (getitimer), of a 5 s nanosleep cut short after 1 s by
 *                          SIGALRM (its rem)
 *   timeprobe rdtsc        executes rdtsc
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static double sec(clockid_t id)
{
    struct timespec ts;
    if (clock_gettime(id, &ts) != 0)
        return -1;
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void on_alarm(int sig)
{
    (void)sig;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "now") == 0) {
        static const struct { const char *name; clockid_t id; } clocks[] = {
            {"REALTIME", CLOCK_REALTIME}, {"REALTIME_COARSE", CLOCK_REALTIME_COARSE}, {"TAI", CLOCK_TAI},
            {"MONOTONIC", CLOCK_MONOTONIC}, {"MONOTONIC_COARSE", CLOCK_MONOTONIC_COARSE},
            {"MONOTONIC_RAW", CLOCK_MONOTONIC_RAW}, {"BOOTTIME", CLOCK_BOOTTIME},
        };
        for (size_t i = 0; i < sizeof clocks / sizeof clocks[0]; i++)
            printf("%s %.6f\n", clocks[i].name, sec(clocks[i].id));
        struct timespec raw;
        syscall(SYS_clock_gettime, CLOCK_REALTIME, &raw);
        printf("REALTIME_SYSCALL %.6f\n", (double)raw.tv_sec + raw.tv_nsec / 1e9);
        struct timeval tv;
        gettimeofday(&tv, NULL);
        printf("GETTIMEOFDAY %.6f\n", (double)tv.tv_sec + tv.tv_usec / 1e6);
        printf("TIME %ld\n", (long)time(NULL));
        printf("TIME_SYSCALL %ld\n", (long)syscall(SYS_time, NULL));
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "spin") == 0) {
        double before = sec(CLOCK_REALTIME), mono = sec(CLOCK_MONOTONIC);
        double until = sec(CLOCK_PROCESS_CPUTIME_ID) + atof(argv[2]);
        while (sec(CLOCK_PROCESS_CPUTIME_ID) < until)
            ;
        printf("%.9f %.9f %.9f %.9f\n", before, sec(CLOCK_REALTIME), mono, sec(CLOCK_MONOTONIC));
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "timerfd") == 0) {
        int fd = timerfd_create(CLOCK_MONOTONIC, 0);
        struct itimerspec its = {{0, 0}, {atoi(argv[2]), 0}};
        double before = sec(CLOCK_MONOTONIC), real_before = sec(CLOCK_REALTIME);
        uint64_t ticks;
        if (fd < 0 || timerfd_settime(fd, 0, &its, NULL) != 0 || read(fd, &ticks, sizeof ticks) != 8)
            return perror("timerfd"), 1;
        printf("%.6f %.6f\n", sec(CLOCK_MONOTONIC) - before, sec(CLOCK_REALTIME) - real_before);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "condwait") == 0) {
        pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
        pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
        struct timespec deadline;
        clock_gettime(CLOCK_REALTIME, &deadline);
        double before = sec(CLOCK_REALTIME);
        deadline.tv_sec += atoi(argv[2]);
        pthread_mutex_lock(&mutex);
        int rc = pthread_cond_timedwait(&cond, &mutex, &deadline);
        printf("%d %.6f\n", rc, sec(CLOCK_REALTIME) - before);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "remaining") == 0) {
        int fd = timerfd_create(CLOCK_MONOTONIC, 0);
        struct itimerspec its = {{0, 0}, {5, 0}}, left;
        timerfd_settime(fd, 0, &its, NULL);
        timerfd_gettime(fd, &left);
        struct itimerval it = {{0, 0}, {5, 0}}, it_left;
        setitimer(ITIMER_REAL, &it, NULL);
        getitimer(ITIMER_REAL, &it_left);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm;
        sigaction(SIGALRM, &sa, NULL);
        struct itimerval one = {{0, 0}, {1, 0}};
        setitimer(ITIMER_REAL, &one, NULL);
        struct timespec req = {5, 0}, rem = {0, 0};
        int rc = nanosleep(&req, &rem);
        printf("%.3f %.3f %d %.3f\n", left.it_value.tv_sec + left.it_value.tv_nsec / 1e9,
               it_left.it_value.tv_sec + it_left.it_value.tv_usec / 1e6, rc == -1 ? errno : 0,
               rem.tv_sec + rem.tv_nsec / 1e9);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "rdtsc") == 0) {
        uint32_t lo, hi;
        __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
        printf("%llu\n", ((unsigned long long)hi << 32) | lo);
        return 0;
    }
    fprintf(stderr, "usage: timeprobe now | spin SECS | timerfd SECS | condwait SECS | remaining | rdtsc\n");
    return 2;
}
