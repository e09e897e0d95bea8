/* Races an exec rule (tests/test_rules.py): for SECONDS, forks children that
 * each exec a path one thread flips between ALLOWED and DENIED. Every other
 * child execs from a second thread (after a successful exec the process's id
 * is the main thread's, not the exec'ing one's). Whatever the denied program
 * prints reaches stdout; the allowed one prints nothing. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char buffer[4096];
static const char *allowed, *denied;
static atomic_int flipping;

static void *flip(void *unused)
{
    size_t la = strlen(allowed) + 1, ld = strlen(denied) + 1;
    atomic_store(&flipping, 1);
    for (;;) {
        memcpy(buffer, allowed, la);
        memcpy(buffer, denied, ld);
    }
    return unused;
}

static void *exec_loop(void *unused)
{
    char *args[] = {buffer, "DENIED-PROGRAM-RAN", NULL};
    for (int i = 0; i < 100000; i++)
        execv(buffer, args);
    _exit(3);
    return unused;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    double seconds = atof(argv[1]);
    allowed = argv[2];
    denied = argv[3];
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long children = 0;
    do {
        pid_t pid = fork();
        if (pid == 0) {
            strcpy(buffer, allowed);
            pthread_t t;
            pthread_create(&t, NULL, flip, NULL);
            while (!atomic_load(&flipping))
                ;
            if (children % 2)
                pthread_create(&t, NULL, exec_loop, NULL), pause();
            exec_loop(NULL);
        }
        waitpid(pid, NULL, 0);
        children++;
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
    fprintf(stderr, "children=%ld\n", children);
    return 0;
}
