/* Kernel stack slots for application processors (mode=smp; smp.c MAX_APS is AP_SLOTS - 1). */
#define AP_SLOTS 512
/*
 * PVH entry, long-mode setup and the CPL0 trap stubs of the ts-vmm micro-guest.
 *
 * The VMM (QEMU microvm or ours) enters _pvh_entry in 32-bit protected mode,
 * paging off, EBX = physical address of struct hvm_start_info (Xen's
 * arch-x86/hvm/start_info.h). We load static page tables (identity map of the
 * first 4 GiB, 2 MiB pages, user-accessible), a GDT with kernel and user
 * segments and a TSS, enter long mode, and call kmain() at CPL0, which builds
 * the IDT and drops to CPL3 through enter_user().
 *
 * Everything here runs through KVM's instruction emulator on the development
 * machine (~1 M instructions/s at CPL0), so it is kept short and plain.
 */
#define KCODE64 0x08
#define KDATA   0x10
#define KCODE32 0x18
#define UDATA   0x23
#define UCODE64 0x2b
#define TSSSEL  0x30

/* ELF note read by PVH loaders: name "Xen", type XEN_ELFNOTE_PHYS32_ENTRY (18),
 * desc = the 32-bit physical entry point (as a quad, like Linux's). */
	.section .note.pvh, "a"
	.balign 4
	.long 4, 8, 18
	.asciz "Xen"
	.balign 4
	.quad _pvh_entry

	.section .text.entry, "ax"
	.code32
	.globl _pvh_entry
_pvh_entry:
	cli
	cld
	movl %ebx, start_info_paddr
	lgdt gdt_ptr
	movl %cr4, %eax
	orl $0x20, %eax                 /* CR4.PAE */
	movl %eax, %cr4
	movl $pml4, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx          /* IA32_EFER */
	rdmsr
	orl $0x100, %eax                /* EFER.LME */
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax           /* CR0.PG | CR0.PE */
	andl $0x9fffffff, %eax          /* clear CD, NW */
	movl %eax, %cr0
	ljmp $KCODE64, $long_entry

	.code64
long_entry:
	movl $KDATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	xorl %eax, %eax
	movl %eax, %fs
	movl %eax, %gs
	leaq kstack_top(%rip), %rsp
	call kmain                      /* does not return */
1:	hlt
	jmp 1b

/* void enter_user(uint64_t rip, uint64_t rsp, uint64_t rflags): iretq to CPL3. */
	.text
	.globl enter_user
enter_user:
	movl $UDATA, %eax
	movl %eax, %ds
	movl %eax, %es
	pushq $UDATA
	pushq %rsi
	pushq %rdx
	pushq $UCODE64
	pushq %rdi
	iretq

/* void enter_user_arg(rip, rsp, rflags, arg): as enter_user, with rdi = arg at CPL3. */
	.globl enter_user_arg
enter_user_arg:
	movl $UDATA, %eax
	movl %eax, %ds
	movl %eax, %es
	pushq $UDATA
	pushq %rsi
	pushq %rdx
	pushq $UCODE64
	pushq %rdi
	movq %rcx, %rdi
	iretq

/* Exception and syscall stubs: push a uniform frame, call trap(frame). */
.macro STUB vec, haserr
	.globl isr\vec
isr\vec:
	.if \haserr == 0
	pushq $0
	.endif
	pushq $\vec
	jmp isr_common
.endm
	STUB 0,0
	STUB 1,0
	STUB 2,0
	STUB 3,0
	STUB 4,0
	STUB 5,0
	STUB 6,0
	STUB 7,0
	STUB 8,1
	STUB 9,0
	STUB 10,1
	STUB 11,1
	STUB 12,1
	STUB 13,1
	STUB 14,1
	STUB 15,0
	STUB 16,0
	STUB 17,1
	STUB 18,0
	STUB 19,0
	STUB 20,0
	STUB 21,1
	STUB 128,0

/* External interrupts and IPIs, vectors 0x20-0xff: one 16-byte stub each at
 * irq_stubs + 16 * (vector - 0x20), so kmain can fill the IDT with a loop. */
	.balign 16
	.globl irq_stubs
irq_stubs:
	.set v, 0x20
	.rept 0xe0
	.balign 16
	pushq $0
	pushq $v
	jmp isr_common
	.set v, v + 1
	.endr

isr_common:
	pushq %rax
	pushq %rbx
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %rbp
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	movq %rsp, %rdi
	call trap
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rbp
	popq %rdi
	popq %rsi
	popq %rdx
	popq %rcx
	popq %rbx
	popq %rax
	addq $16, %rsp
	iretq

	.data
	.balign 16
	.globl gdt
gdt:
	.quad 0
	.quad 0x00af9a000000ffff        /* 0x08 kernel code, 64-bit */
	.quad 0x00cf92000000ffff        /* 0x10 kernel data */
	.quad 0x00cf9a000000ffff        /* 0x18 kernel code, 32-bit */
	.quad 0x00cff2000000ffff        /* 0x20 user data (DPL3) */
	.quad 0x00affa000000ffff        /* 0x28 user code, 64-bit (DPL3) */
	.globl gdt_tss
gdt_tss:
	.quad 0, 0                      /* 0x30 TSS descriptor, filled by kmain */
gdt_end:
	.balign 8
	.globl gdt_ptr
gdt_ptr:
	.word gdt_end - gdt - 1
	.quad gdt

	.globl start_info_paddr
start_info_paddr:
	.long 0, 0

/* Identity map of 0..8 GiB with 2 MiB pages, user-accessible (US), writable.
 * The top GiB (MMIO: virtio-mmio, IOAPIC, LAPIC) is mapped uncached (PCD|PWT). */
	.balign 4096
	.globl pml4
pml4:
	.quad pdpt + 0x7
	.fill 511, 8, 0
pdpt:
	.quad pd0 + 0x7, pd1 + 0x7, pd2 + 0x7, pd3 + 0x7
	.quad pd4 + 0x7, pd5 + 0x7, pd6 + 0x7, pd7 + 0x7
	.fill 504, 8, 0
/* 0-8 GiB: RAM below 3 GiB, the MMIO hole 3-4 GiB, RAM above 4 GiB (VMMs put
 * RAM beyond 3 GiB there; blk's high-buffer check uses it). */
pd0:
	.set i, 0
	.rept 4096
	.if i >= 1536 && i < 2048
	.quad (i << 21) | 0x9f
	.else
	.quad (i << 21) | 0x87
	.endif
	.set i, i + 1
	.endr
pd1 = pd0 + 4096
pd2 = pd0 + 8192
pd3 = pd0 + 12288
pd4 = pd0 + 16384
pd5 = pd0 + 20480
pd6 = pd0 + 24576
pd7 = pd0 + 28672

	.bss
	.balign 4096
	.globl kstack_top
kstack:
	.skip 16384
kstack_top:

	.text
/* First code at CPL3: align the stack and run user_main(). */
	.globl user_entry
user_entry:
	andq $-16, %rsp
	call user_main
	ud2

/* long syscall3(nr, a, b, c): int 0x80 with rax = nr, rdi/rsi/rdx = a/b/c. */
	.globl syscall3
syscall3:
	movq %rdi, %rax
	movq %rsi, %rdi
	movq %rdx, %rsi
	movq %rcx, %rdx
	int $0x80
	ret

/*
 * AP start-up trampoline, copied to AP_TRAMP (0x8000) by mode=smp and entered
 * in real mode at 0800:0000 by the SIPI (vector 0x08). It loads the BSP's GDT
 * and page tables, enters long mode and jumps to ap_long at CPL0.
 */
#define AP_TRAMP 0x8000
#define TR(x) (AP_TRAMP + (x) - ap_tramp_start)
	.section .rodata.tramp, "a"
	.code16
	.globl ap_tramp_start, ap_tramp_end
ap_tramp_start:
	cli
	xorw %ax, %ax
	movw %ax, %ds
	lgdtl TR(ap_gdt_ptr)
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	ljmpl $KCODE32, $TR(ap_pm)
	.code32
ap_pm:
	movl $KDATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %cr4, %eax
	orl $0x20, %eax
	movl %eax, %cr4
	movl $pml4, %eax
	movl %eax, %cr3
	movl $0xc0000080, %ecx
	rdmsr
	orl $0x100, %eax
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax
	andl $0x9fffffff, %eax
	movl %eax, %cr0
	ljmp $KCODE64, $ap_long
	.balign 8
ap_gdt_ptr:
	.word gdt_end - gdt - 1
	.long gdt
ap_tramp_end:

	.text
	.code64
ap_long:
	movl $KDATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl $1, %eax
	lock xaddl %eax, ap_next(%rip)  /* eax = this AP's index, from 1 */
	cmpl $AP_SLOTS, %eax
	ja 1f                           /* no stack slot for it: park (mode_smp counts it as started) */
	movl %eax, %edi
	movq %rdi, %rax
	shlq $12, %rax
	leaq ap_stacks(%rip), %rsp
	addq %rax, %rsp                 /* top of the 4 KiB stack of slot index-1 */
	call ap_main
1:	hlt
	jmp 1b

	.data
	.balign 4
	.globl ap_next
ap_next:
	.long 1
	.bss
	.balign 4096
ap_stacks:
	.skip 4096 * AP_SLOTS
