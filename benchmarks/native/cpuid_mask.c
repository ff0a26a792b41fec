/* Hide CPU features from every library in this process, by trapping the CPUID instruction.
 *
 * Loaded with LD_PRELOAD by benchmarks/cpu_mask.py. On Linux x86-64 CPUs with CPUID faulting
 * (the `cpuid_fault` flag in /proc/cpuinfo), arch_prctl(ARCH_SET_CPUID, 0) makes every CPUID
 * instruction of this thread, and of the threads it starts later, raise SIGSEGV. The handler
 * runs the real CPUID with faulting off for a moment, clears the bits of the hidden features,
 * and steps over the instruction. ONNX Runtime's kernels (MLAS), NumPy and OpenVINO then
 * choose their code paths as on a CPU without those features. The instructions themselves
 * still run if a library uses them without asking CPUID; none of those above does.
 *
 * SHOPRANK_CPU_HIDE: comma-separated groups: amx, avx512, avx_vnni. A process that replaces
 * the SIGSEGV handler later (Python's faulthandler, as pytest enables it) breaks the mask.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define ARCH_SET_CPUID 0x1012
#define BIT(n) (1u << (n))

static uint32_t hide_7_0_ebx, hide_7_0_ecx, hide_7_0_edx, hide_7_1_eax;

static void real_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    (void)info;
    ucontext_t *uc = context;
    greg_t *regs = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)regs[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) { /* a real fault: let it crash as it would have */
        signal(sig, SIG_DFL);
        return;
    }
    uint32_t leaf = (uint32_t)regs[REG_RAX], sub = (uint32_t)regs[REG_RCX], r[4];
    real_cpuid(leaf, sub, r);
    if (leaf == 7 && sub == 0) {
        r[1] &= ~hide_7_0_ebx;
        r[2] &= ~hide_7_0_ecx;
        r[3] &= ~hide_7_0_edx;
    } else if (leaf == 7 && sub == 1) {
        r[0] &= ~hide_7_1_eax;
    }
    regs[REG_RAX] = r[0];
    regs[REG_RBX] = r[1];
    regs[REG_RCX] = r[2];
    regs[REG_RDX] = r[3];
    regs[REG_RIP] += 2;
}

__attribute__((constructor)) static void install(void) {
    const char *list = getenv("SHOPRANK_CPU_HIDE");
    if (list == NULL || *list == '\0')
        return;
    char copy[256];
    snprintf(copy, sizeof copy, "%s", list);
    for (char *save = NULL, *group = strtok_r(copy, ",", &save); group; group = strtok_r(NULL, ",", &save)) {
        if (strcmp(group, "amx") == 0) { /* AMX-BF16, AMX-TILE, AMX-INT8; AMX-FP16 */
            hide_7_0_edx |= BIT(22) | BIT(24) | BIT(25);
            hide_7_1_eax |= BIT(21);
        } else if (strcmp(group, "avx512") == 0) {
            /* F DQ IFMA PF ER CD BW VL; VBMI VBMI2 VNNI BITALG VPOPCNTDQ; 4VNNIW 4FMAPS VP2INTERSECT FP16; BF16 */
            hide_7_0_ebx |= BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31);
            hide_7_0_ecx |= BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14);
            hide_7_0_edx |= BIT(2) | BIT(3) | BIT(8) | BIT(23);
            hide_7_1_eax |= BIT(5);
        } else if (strcmp(group, "avx_vnni") == 0) { /* the VEX-encoded VNNI of Alder Lake and later; AVX-IFMA */
            hide_7_1_eax |= BIT(4) | BIT(23);
        } else {
            fprintf(stderr, "cpuid_mask: SHOPRANK_CPU_HIDE=%s: unknown '%s'; allowed: amx, avx512, avx_vnni\n",
                    list, group);
            exit(2);
        }
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, NULL) != 0 || syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        fprintf(stderr, "cpuid_mask: this CPU or kernel has no CPUID faulting (cpuid_fault); cannot hide features\n");
        exit(3);
    }
}
