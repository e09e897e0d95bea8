/* The one syscall table: every syscall viewbox treats specially.
 * Includers define VB_SYSCALL, VB_IOCTL and VB_INTERPOSE (empty when unused).
 *
 * X-macro rows: VB_SYSCALL(name, group, how, mask, note)
 *   name   the syscall, as in __NR_<name>
 *   group  VB_GROUP_* it belongs to; the plan denies whole groups (VB_GROUP_ALWAYS:
 *          every plan)
 *   how    VB_DENY           fail with EPERM
 *          VB_DENY_FLAGS     fail with EPERM when (arg0 & mask) != 0 (low 32 bits)
 *          VB_NOSYS          fail with ENOSYS, so libc falls back to an older
 *                            call whose arguments the filter can inspect
 *   note   why; shown by `viewbox show --syscalls` and in the docs
 *
 * And VB_IOCTL(request, name, group, note): ioctl requests denied with EPERM; the
 * request is compared on its low 32 bits, as the kernel reads it.
 *
 * The seccomp program (seccomp.c), the Python side's names (via
 * vb_syscall_table) and the README's table all derive from these rows.
 */

#define VB_NS_FLAGS_CLONE 0x7E020000u   /* CLONE_NEW{NS,CGROUP,UTS,IPC,USER,PID,NET} */
#define VB_NS_FLAGS_UNSHARE 0x7E020080u /* the same plus CLONE_NEWTIME */
#define VB_CLONE_UNTRACED 0x00800000u
/* Rows in no group: every filter has them, no [seccomp].allow lifts them.
 * Several rows of one syscall make one check (VB_DENY_FLAGS masks are or-ed). */
#define VB_GROUP_ALWAYS 0

VB_SYSCALL(io_uring_setup, VB_GROUP_IO_URING, VB_DENY, 0, "io_uring performs I/O that seccomp never sees")
VB_SYSCALL(io_uring_enter, VB_GROUP_IO_URING, VB_DENY, 0, "io_uring performs I/O that seccomp never sees")
VB_SYSCALL(io_uring_register, VB_GROUP_IO_URING, VB_DENY, 0, "io_uring performs I/O that seccomp never sees")

VB_SYSCALL(bpf, VB_GROUP_BPF, VB_DENY, 0, "loads programs into the kernel; a large attack surface")

VB_SYSCALL(ptrace, VB_GROUP_PTRACE, VB_DENY, 0, "controls another process: would bypass seccomp and read its memory")
VB_SYSCALL(process_vm_readv, VB_GROUP_PTRACE, VB_DENY, 0, "reads another process's memory")
VB_SYSCALL(process_vm_writev, VB_GROUP_PTRACE, VB_DENY, 0, "writes another process's memory")
VB_SYSCALL(process_madvise, VB_GROUP_PTRACE, VB_DENY, 0, "acts on another process's memory")
VB_SYSCALL(pidfd_getfd, VB_GROUP_PTRACE, VB_DENY, 0, "copies a file descriptor out of another process")
VB_SYSCALL(kcmp, VB_GROUP_PTRACE, VB_DENY, 0, "compares kernel objects of other processes (an information leak)")

VB_SYSCALL(keyctl, VB_GROUP_KEYS, VB_DENY, 0, "the kernel keyring is not namespaced")
VB_SYSCALL(add_key, VB_GROUP_KEYS, VB_DENY, 0, "the kernel keyring is not namespaced")
VB_SYSCALL(request_key, VB_GROUP_KEYS, VB_DENY, 0, "the kernel keyring is not namespaced")

VB_SYSCALL(perf_event_open, VB_GROUP_PERF, VB_DENY, 0, "performance counters leak information about the host")

VB_SYSCALL(userfaultfd, VB_GROUP_USERFAULT, VB_DENY, 0, "stalls the kernel mid-copy; a common exploit primitive")

VB_SYSCALL(open_by_handle_at, VB_GROUP_HANDLES, VB_DENY, 0, "opens files by handle, bypassing the view (the 'shocker' escape)")
VB_SYSCALL(name_to_handle_at, VB_GROUP_HANDLES, VB_DENY, 0, "produces the handles open_by_handle_at consumes")

VB_SYSCALL(mount, VB_GROUP_MOUNT, VB_DENY, 0, "would change the view")
VB_SYSCALL(umount2, VB_GROUP_MOUNT, VB_DENY, 0, "would reveal what the view covers")
VB_SYSCALL(pivot_root, VB_GROUP_MOUNT, VB_DENY, 0, "would change the view")
VB_SYSCALL(chroot, VB_GROUP_MOUNT, VB_DENY, 0, "would change the view")
VB_SYSCALL(move_mount, VB_GROUP_MOUNT, VB_DENY, 0, "would change the view")
VB_SYSCALL(open_tree, VB_GROUP_MOUNT, VB_DENY, 0, "would change the view")
VB_SYSCALL(open_tree_attr, VB_GROUP_MOUNT, VB_DENY, 0, "would change the view")
VB_SYSCALL(fsopen, VB_GROUP_MOUNT, VB_DENY, 0, "would change the view")
VB_SYSCALL(fsconfig, VB_GROUP_MOUNT, VB_DENY, 0, "would change the view")
VB_SYSCALL(fsmount, VB_GROUP_MOUNT, VB_DENY, 0, "would change the view")
VB_SYSCALL(fspick, VB_GROUP_MOUNT, VB_DENY, 0, "would change the view")
VB_SYSCALL(mount_setattr, VB_GROUP_MOUNT, VB_DENY, 0, "would change the view")

VB_SYSCALL(unshare, VB_GROUP_NAMESPACE, VB_DENY_FLAGS, VB_NS_FLAGS_UNSHARE, "new namespaces give back the capabilities the sandbox dropped")
VB_SYSCALL(clone, VB_GROUP_NAMESPACE, VB_DENY_FLAGS, VB_NS_FLAGS_CLONE, "new namespaces give back the capabilities the sandbox dropped")
VB_SYSCALL(clone, VB_GROUP_ALWAYS, VB_DENY_FLAGS, VB_CLONE_UNTRACED, "CLONE_UNTRACED: a child no tracer follows would keep the vDSO, and with it the host's clock")
VB_SYSCALL(clone3, VB_GROUP_ALWAYS, VB_NOSYS, 0, "its flags (new namespaces, CLONE_UNTRACED) are behind a pointer the filter cannot read; libc falls back to clone")
VB_SYSCALL(setns, VB_GROUP_NAMESPACE, VB_DENY, 0, "would enter another namespace")

VB_SYSCALL(kexec_load, VB_GROUP_KERNEL, VB_DENY, 0, "replaces the running kernel")
VB_SYSCALL(kexec_file_load, VB_GROUP_KERNEL, VB_DENY, 0, "replaces the running kernel")
VB_SYSCALL(init_module, VB_GROUP_KERNEL, VB_DENY, 0, "loads kernel code")
VB_SYSCALL(finit_module, VB_GROUP_KERNEL, VB_DENY, 0, "loads kernel code")
VB_SYSCALL(delete_module, VB_GROUP_KERNEL, VB_DENY, 0, "unloads kernel code")
VB_SYSCALL(reboot, VB_GROUP_KERNEL, VB_DENY, 0, "host-wide")
VB_SYSCALL(swapon, VB_GROUP_KERNEL, VB_DENY, 0, "host-wide")
VB_SYSCALL(swapoff, VB_GROUP_KERNEL, VB_DENY, 0, "host-wide")
VB_SYSCALL(acct, VB_GROUP_KERNEL, VB_DENY, 0, "host-wide process accounting")
VB_SYSCALL(quotactl, VB_GROUP_KERNEL, VB_DENY, 0, "host-wide disk quotas")
VB_SYSCALL(syslog, VB_GROUP_KERNEL, VB_DENY, 0, "the kernel log leaks host information and addresses")
VB_SYSCALL(lookup_dcookie, VB_GROUP_KERNEL, VB_DENY, 0, "host-wide profiling interface")
VB_SYSCALL(vhangup, VB_GROUP_KERNEL, VB_DENY, 0, "hangs up the terminal of other processes")
VB_SYSCALL(uselib, VB_GROUP_KERNEL, VB_DENY, 0, "obsolete loader path, a past exploit vector")
#ifdef __NR_iopl
VB_SYSCALL(iopl, VB_GROUP_KERNEL, VB_DENY, 0, "raw I/O port access")
VB_SYSCALL(ioperm, VB_GROUP_KERNEL, VB_DENY, 0, "raw I/O port access")
VB_SYSCALL(modify_ldt, VB_GROUP_KERNEL, VB_DENY, 0, "16-bit segments, a past exploit vector")
#endif

VB_SYSCALL(settimeofday, VB_GROUP_TIME_SET, VB_DENY, 0, "the host's clock is not the sandbox's to set")
VB_SYSCALL(clock_settime, VB_GROUP_TIME_SET, VB_DENY, 0, "the host's clock is not the sandbox's to set")
VB_SYSCALL(clock_adjtime, VB_GROUP_TIME_SET, VB_DENY, 0, "the host's clock is not the sandbox's to set")

VB_SYSCALL(move_pages, VB_GROUP_MEMORY, VB_DENY, 0, "moves the memory of other processes")
VB_SYSCALL(migrate_pages, VB_GROUP_MEMORY, VB_DENY, 0, "moves the memory of other processes")

VB_IOCTL(0x5412, TIOCSTI, VB_GROUP_TTY_INJECT, "types characters into a terminal another process reads")
VB_IOCTL(0x541C, TIOCLINUX, VB_GROUP_TTY_INJECT, "console selection can inject input too")

/* Interposed syscalls: VB_INTERPOSE(name, family, args, note). When the plan
 * interposes a family, its syscalls go to the supervisor (seccomp user
 * notification) after the deny rows above have had their say; the handler of
 * each is sys_<name>() in the family's file (sys_fs.c). `args` says how to
 * decode each argument for the audit, one letter per argument:
 *   d dirfd   p path   f open flags   m mode   a AT_* flags   h struct open_how *
 *   i int     x hex    S sockaddr (the destination, as decoded once)    - not shown
 */
#ifdef __NR_open
VB_INTERPOSE(open, VB_FAMILY_FS, "pfm", "opens a file")
VB_INTERPOSE(creat, VB_FAMILY_FS, "pm", "creates a file")
VB_INTERPOSE(stat, VB_FAMILY_FS, "p-", "reads a file's metadata")
VB_INTERPOSE(lstat, VB_FAMILY_FS, "p-", "reads a link's metadata")
VB_INTERPOSE(access, VB_FAMILY_FS, "pi", "checks access to a file")
VB_INTERPOSE(readlink, VB_FAMILY_FS, "p--", "reads a symlink")
VB_INTERPOSE(unlink, VB_FAMILY_FS, "p", "removes a file")
VB_INTERPOSE(mkdir, VB_FAMILY_FS, "pm", "creates a directory")
VB_INTERPOSE(rmdir, VB_FAMILY_FS, "p", "removes a directory")
VB_INTERPOSE(rename, VB_FAMILY_FS, "pp", "renames a file")
VB_INTERPOSE(link, VB_FAMILY_FS, "pp", "hard-links a file")
VB_INTERPOSE(symlink, VB_FAMILY_FS, "pp", "creates a symlink")
#endif
#ifdef __NR_renameat
VB_INTERPOSE(renameat, VB_FAMILY_FS, "dpdp", "renames a file")
#endif
VB_INTERPOSE(openat, VB_FAMILY_FS, "dpfm", "opens a file")
VB_INTERPOSE(openat2, VB_FAMILY_FS, "dph-", "opens a file")
VB_INTERPOSE(newfstatat, VB_FAMILY_FS, "dp-a", "reads a file's metadata")
VB_INTERPOSE(statx, VB_FAMILY_FS, "dpax-", "reads a file's metadata")
VB_INTERPOSE(faccessat, VB_FAMILY_FS, "dpi", "checks access to a file")
VB_INTERPOSE(faccessat2, VB_FAMILY_FS, "dpia", "checks access to a file")
VB_INTERPOSE(readlinkat, VB_FAMILY_FS, "dp--", "reads a symlink")
VB_INTERPOSE(unlinkat, VB_FAMILY_FS, "dpa", "removes a file or directory")
VB_INTERPOSE(mkdirat, VB_FAMILY_FS, "dpm", "creates a directory")
VB_INTERPOSE(renameat2, VB_FAMILY_FS, "dpdpx", "renames a file")
VB_INTERPOSE(linkat, VB_FAMILY_FS, "dpdpa", "hard-links a file")
VB_INTERPOSE(symlinkat, VB_FAMILY_FS, "pdp", "creates a symlink")
VB_INTERPOSE(truncate, VB_FAMILY_FS, "pi", "truncates a file")
VB_INTERPOSE(chdir, VB_FAMILY_FS, "p", "changes the working directory")
VB_INTERPOSE(execve, VB_FAMILY_EXEC, "p--", "runs a program")
VB_INTERPOSE(execveat, VB_FAMILY_EXEC, "dp--a", "runs a program")
VB_INTERPOSE(connect, VB_FAMILY_NET, "iS-", "connects a socket")
VB_INTERPOSE(sendto, VB_FAMILY_NET, "i--xS-", "sends to an address (without one, the filter lets it through)")
VB_INTERPOSE(sendmsg, VB_FAMILY_NET, "iSx", "sends a message")
VB_INTERPOSE(sendmmsg, VB_FAMILY_NET, "iS-x", "sends messages")
VB_INTERPOSE(bind, VB_FAMILY_NET, "iS-", "names a socket")
VB_INTERPOSE(listen, VB_FAMILY_NET, "ii", "listens on a socket")

/* The time view's rows, read only where VB_TIME_CLOCK and VB_TIME are defined.
 * When a plan's time view sets `trap` (VB_TRAP_*):
 *  - VB_TIME_CLOCK(name, trap, args, note): a clock read goes to the supervisor
 *    (SECCOMP_RET_USER_NOTIF, family VB_FAMILY_CLOCK), whose handler
 *    sys_<name>(struct vb_call *) (sys_time.c) writes the sandbox's time into
 *    the caller; `args` decodes the arguments as VB_INTERPOSE's do;
 *  - VB_TIME(name, trap, note): the call stops in the sandbox's init
 *    (SECCOMP_RET_TRACE), whose handler trace_<name>(struct vb_tracee *)
 *    (sys_time.c) rewrites its timeout or time stamps.
 * clock_gettime is sent by clock id: REALTIME-like ids with
 * VB_TRAP_CLOCK_REAL, MONOTONIC/BOOTTIME-like ids with VB_TRAP_CLOCK_MONO;
 * CPU-time clocks always run natively. */
#if defined(VB_TIME) && defined(VB_TIME_CLOCK) && defined(__x86_64__) /* the tracer reads x86_64 registers */
VB_TIME_CLOCK(clock_gettime, VB_TRAP_CLOCK_REAL, "i-", "reads a clock")
VB_TIME_CLOCK(gettimeofday, VB_TRAP_CLOCK_REAL, "--", "reads CLOCK_REALTIME")
VB_TIME_CLOCK(time, VB_TRAP_CLOCK_REAL, "-", "reads CLOCK_REALTIME in seconds")
VB_TIME_CLOCK(adjtimex, VB_TRAP_CLOCK_REAL, "-", "reads CLOCK_REALTIME and the NTP state (modes 0); setting fails")
VB_TIME_CLOCK(clock_adjtime, VB_TRAP_CLOCK_REAL, "i-", "the same for a clock id (under a time view its time_set row gives way)")
VB_TIME(clock_nanosleep, VB_TRAP_DEADLINES, "sleeps, perhaps until an absolute deadline")
VB_TIME(timerfd_settime, VB_TRAP_DEADLINES, "arms a timer, perhaps at an absolute deadline")
VB_TIME(futex, VB_TRAP_DEADLINES, "waits with a timeout (only waits that have one are trapped)")
VB_TIME(nanosleep, VB_TRAP_TIMEOUTS, "sleeps")
VB_TIME(select, VB_TRAP_TIMEOUTS, "waits for fds, with a timeout")
VB_TIME(pselect6, VB_TRAP_TIMEOUTS, "waits for fds, with a timeout")
VB_TIME(poll, VB_TRAP_TIMEOUTS, "waits for fds, with a timeout")
VB_TIME(ppoll, VB_TRAP_TIMEOUTS, "waits for fds, with a timeout")
VB_TIME(epoll_wait, VB_TRAP_TIMEOUTS, "waits for events, with a timeout")
VB_TIME(epoll_pwait, VB_TRAP_TIMEOUTS, "waits for events, with a timeout")
VB_TIME(epoll_pwait2, VB_TRAP_TIMEOUTS, "waits for events, with a timeout")
VB_TIME(alarm, VB_TRAP_TIMEOUTS, "arms SIGALRM")
VB_TIME(setitimer, VB_TRAP_TIMEOUTS, "arms an interval timer")
VB_TIME(getitimer, VB_TRAP_TIMEOUTS, "reads an interval timer")
VB_TIME(timerfd_gettime, VB_TRAP_TIMEOUTS, "reads a timer")
VB_TIME(utimensat, VB_TRAP_STAMPS, "sets file times, perhaps to now")
VB_TIME(arch_prctl, VB_TRAP_STAMPS, "ARCH_MAP_VDSO_* would map the vDSO and the host's clock data again")
VB_TIME(times, VB_TRAP_STRICT, "returns ticks since the host booted (strict: since the sandbox's boot)")
VB_TIME(stat, VB_TRAP_FILE_TIMES, "reads a file's times (file_times: on the sandbox's clock)")
VB_TIME(lstat, VB_TRAP_FILE_TIMES, "reads a link's times (file_times: on the sandbox's clock)")
VB_TIME(fstat, VB_TRAP_FILE_TIMES, "reads a file's times (file_times: on the sandbox's clock)")
VB_TIME(newfstatat, VB_TRAP_FILE_TIMES, "reads a file's times (file_times: on the sandbox's clock)")
VB_TIME(statx, VB_TRAP_FILE_TIMES, "reads a file's times (file_times: on the sandbox's clock)")
VB_TIME(utimes, VB_TRAP_FILE_TIMES, "sets file times (file_times: given on the sandbox's clock)")
VB_TIME(futimesat, VB_TRAP_FILE_TIMES, "sets file times (file_times: given on the sandbox's clock)")
VB_TIME(utime, VB_TRAP_FILE_TIMES, "sets file times in seconds (file_times: on the sandbox's clock)")
#endif
