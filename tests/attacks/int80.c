/* The 32-bit system call entry (int 0x80) from a 64-bit program: getpid,
 * which is 20 in the i386 table. Natively (with IA32 emulation) it prints
 * our pid; the sandbox's filter kills a process that uses a foreign ABI. */
#include <stdio.h>

int main(void)
{
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(20L) : "memory");
    printf("%ld\n", ret);
    return ret > 0 ? 0 : 1;
}
