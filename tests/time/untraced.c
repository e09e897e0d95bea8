/* An attack on the time view's tracer: a child cloned with CLONE_UNTRACED is
 * never traced, so the program it runs keeps the vDSO and reads the host's
 * clock there.
 *
 *   untraced clone|clone3 PROGRAM [ARGS...]
 *
 * runs PROGRAM in such a child (the clone made by a raw system call, as a
 * libc-free program would) and prints what it printed; or prints
 * "refused ERRNO" when the clone fails. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    long pid;
    if (strcmp(argv[1], "clone3") == 0) {
        struct clone_args args = {.flags = CLONE_UNTRACED, .exit_signal = SIGCHLD};
        pid = syscall(SYS_clone3, &args, sizeof args);
    } else {
        pid = syscall(SYS_clone, CLONE_UNTRACED | SIGCHLD, 0, 0, 0, 0);
    }
    if (pid < 0) {
        printf("refused %d\n", errno);
        return 0;
    }
    if (pid == 0) {
        execv(argv[2], argv + 2);
        _exit(127);
    }
    int status;
    waitpid((pid_t)pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
