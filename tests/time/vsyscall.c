/* Reads the time through the legacy [vsyscall] page, as pre-2012 static
 * binaries do: a call to its fixed address, which the kernel emulates as the
 * system call (so seccomp sees it). Prints "vsyscall_time SECONDS" and
 * "vsyscall_gettimeofday SECONDS". */
#include <stdio.h>
#include <sys/time.h>
#include <time.h>

#define VSYSCALL_GETTIMEOFDAY 0xffffffffff600000UL
#define VSYSCALL_TIME 0xffffffffff600400UL

int main(void)
{
    time_t (*vtime)(time_t *) = (time_t (*)(time_t *))VSYSCALL_TIME;
    int (*vgettimeofday)(struct timeval *, void *) = (int (*)(struct timeval *, void *))VSYSCALL_GETTIMEOFDAY;
    time_t t = 0, returned = vtime(&t);
    printf("vsyscall_time %ld %ld\n", (long)returned, (long)t);
    struct timeval tv = {0, 0};
    int rc = vgettimeofday(&tv, NULL);
    printf("vsyscall_gettimeofday %d %ld\n", rc, (long)tv.tv_sec);
    return 0;
}
