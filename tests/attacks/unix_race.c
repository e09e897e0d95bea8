/* Races a unix socket path rule (tests/test_edges15.py): for SECONDS, connects
 * to a path one thread flips between ALLOWED and DENIED, and reads what the
 * server at the other end says. Prints how many connections each got. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_un addr = {.sun_family = AF_UNIX};
static const char *allowed, *denied;
static atomic_int flipping;

static void *flip(void *unused)
{
    size_t la = strlen(allowed) + 1, ld = strlen(denied) + 1;
    atomic_store(&flipping, 1);
    for (;;) {
        memcpy(addr.sun_path, allowed, la);
        memcpy(addr.sun_path, denied, ld);
    }
    return unused;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    double seconds = atof(argv[1]);
    allowed = argv[2];
    denied = argv[3];
    if (strlen(allowed) >= sizeof addr.sun_path || strlen(denied) >= sizeof addr.sun_path)
        return 2;
    strcpy(addr.sun_path, allowed);
    pthread_t t;
    pthread_create(&t, NULL, flip, NULL);
    while (!atomic_load(&flipping))
        ;
    long tries = 0, got_allowed = 0, got_denied = 0;
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    do {
        int s = socket(AF_UNIX, SOCK_STREAM, 0);
        char word[16] = {0};
        if (connect(s, (struct sockaddr *)&addr, sizeof addr) == 0 && read(s, word, sizeof word - 1) > 0) {
            if (strcmp(word, "SECRET") == 0)
                got_denied++;
            else
                got_allowed++;
        }
        close(s);
        tries++;
        clock_gettime(CLOCK_MONOTONIC, &now);
    } while ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9 < seconds);
    printf("tries=%ld allowed=%ld denied=%ld\n", tries, got_allowed, got_denied);
    return 0;
}
