// vitcuda — the emulator's fiber switch on x86-64 (System V): saves the callee-saved registers
// and the SSE/x87 control words on the current stack, stores the stack pointer to *save_sp,
// and resumes the fiber whose stack pointer is new_sp. The same technique as Boost.Context's
// fcontext, without the dependency. glibc's swapcontext also saves and restores the signal mask
// with a system call on every switch (about 0.5 us here, against a few ns for this); the
// emulator falls back to it on other architectures or with VITCUDA_EMU_UCONTEXT.
//
//   void vitcuda_emu_switch(void** save_sp, void* new_sp);
//
// A new fiber's stack is prepared by kernels/emu/emu.cpp to look like a suspended one whose return
// address is the fiber's entry function.
    .text
    .globl  vitcuda_emu_switch
    .type   vitcuda_emu_switch, @function
    .p2align 4
vitcuda_emu_switch:
    pushq   %rbp
    pushq   %rbx
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
    subq    $16, %rsp
    stmxcsr (%rsp)
    fnstcw  4(%rsp)
    movq    %rsp, (%rdi)
    movq    %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw   4(%rsp)
    addq    $16, %rsp
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rbx
    popq    %rbp
    ret
    .size   vitcuda_emu_switch, .-vitcuda_emu_switch

    .section .note.GNU-stack,"",@progbits
