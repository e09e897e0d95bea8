/* Races against per-path rules (tests/test_rules.py). A sandbox denies
 * "**" "/*.secret" and "**" "/vault/**"; this program, inside it, tries to win a
 * race against the supervisor's check for `seconds` and exits 1 with "LEAK"
 * the moment it gets anything of a denied file. It prints how many attempts
 * succeeded and were refused, so the test knows the race really ran.
 *
 *   race open  SECONDS ALLOWED DENIED   a thread flips the path buffer an
 *                                       open() reads between the two files
 *   race stat  SECONDS ALLOWED DENIED   the same for stat() (sizes differ)
 *   race swap  SECONDS DIR              DIR/cur is a symlink swapped between
 *                                       DIR/pub and DIR/vault, and DIR/pub and
 *                                       DIR/vault are exchanged (RENAME_EXCHANGE)
 *                                       in a loop, while DIR/cur/data and
 *                                       DIR/pub/data are opened and read
 * A denied file's content starts with "SECRET"; an allowed one's never does. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile int stop;
static char buffer[4096];
static const char *allowed, *denied, *dir;

static void *flip(void *unused)
{
    size_t la = strlen(allowed) + 1, ld = strlen(denied) + 1;
    while (!stop) {
        memcpy(buffer, allowed, la);
        memcpy(buffer, denied, ld);
    }
    return unused;
}

static void *swap_link(void *unused)
{
    char tmp[4096], cur[4096];
    snprintf(tmp, sizeof tmp, "%s/tmp-link", dir);
    snprintf(cur, sizeof cur, "%s/cur", dir);
    while (!stop) {
        unlink(tmp);
        if (symlink("pub", tmp) == 0)
            rename(tmp, cur);
        unlink(tmp);
        if (symlink("vault", tmp) == 0)
            rename(tmp, cur);
    }
    return unused;
}

static void *exchange(void *unused)
{
    char pub[4096], vault[4096];
    snprintf(pub, sizeof pub, "%s/pub", dir);
    snprintf(vault, sizeof vault, "%s/vault", dir);
    while (!stop)
        syscall(SYS_renameat2, AT_FDCWD, pub, AT_FDCWD, vault, 1 /* RENAME_EXCHANGE */);
    return unused;
}

static long ok, refused;

static void check_content(int fd)
{
    char data[64];
    ssize_t n = read(fd, data, sizeof data);
    close(fd);
    if (n >= 6 && memcmp(data, "SECRET", 6) == 0) {
        printf("LEAK: read a denied file's content\n");
        fflush(stdout);
        _exit(1);
    }
    ok++;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    const char *mode = argv[1];
    double seconds = atof(argv[2]);
    pthread_t t1, t2;
    int threads = 1;
    struct stat denied_st;
    if (strcmp(mode, "swap") == 0) {
        dir = argv[3];
        pthread_create(&t1, NULL, swap_link, NULL);
        pthread_create(&t2, NULL, exchange, NULL);
        threads = 2;
    } else {
        if (argc < 5)
            return 2;
        allowed = argv[3];
        denied = argv[4];
        strcpy(buffer, allowed);
        pthread_create(&t1, NULL, flip, NULL);
    }
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    char cur_data[4096], pub_data[4096];
    if (dir) {
        snprintf(cur_data, sizeof cur_data, "%s/cur/data", dir);
        snprintf(pub_data, sizeof pub_data, "%s/pub/data", dir);
    }
    /* the denied file's size, learnt from its name before the race: stat must never report it */
    long denied_size = dir ? 0 : (long)strlen("SECRET-SECRET-SECRET\n");
    (void)denied_st;
    for (long i = 0;; i++) {
        if ((i & 255) == 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if ((double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9 >= seconds)
                break;
        }
        if (strcmp(mode, "open") == 0) {
            int fd = open(buffer, O_RDONLY);
            if (fd >= 0)
                check_content(fd);
            else if (errno == EACCES)
                refused++;
        } else if (strcmp(mode, "stat") == 0) {
            struct stat st;
            if (stat(buffer, &st) == 0) {
                if (st.st_size == denied_size) {
                    printf("LEAK: stat reported the denied file\n");
                    fflush(stdout);
                    _exit(1);
                }
                ok++;
            } else if (errno == EACCES) {
                refused++;
            }
        } else {
            const char *path = (i & 1) ? cur_data : pub_data;
            int fd = open(path, O_RDONLY);
            if (fd >= 0)
                check_content(fd);
            else if (errno == EACCES)
                refused++;
        }
    }
    stop = 1;
    pthread_join(t1, NULL);
    if (threads == 2)
        pthread_join(t2, NULL);
    printf("ok=%ld refused=%ld\n", ok, refused);
    return 0;
}
