; efiapp.asm: \EFI\BOOT\BOOTX64.EFI of the e2e test disk's EFI system
; partition, a PE32+ EFI application built by hand (`nasm -f bin`).
;
; When OVMF loads it from the iSCSI LUN (through iPXE's SAN block device),
; it writes "SANBOOT-OK (UEFI)" to COM1 (port 0x3f8) directly, then the same
; line through SystemTable->ConOut->OutputString, then halts.
;
; Layout: one 512-byte header block, then one section (.text, code + data,
; file offset 0x200, RVA 0x1000). Every data access is RIP-relative, so the
; image needs no relocations and loads at any address.

bits 64
default rel

SECTION_RVA   equ 0x1000
SECTION_FILE  equ 0x200
SECTION_SIZE  equ 0x400         ; raw (file) size of the section

; EFI_SYSTEM_TABLE.ConOut and EFI_SIMPLE_TEXT_OUTPUT_PROTOCOL.OutputString
SYSTAB_CONOUT       equ 64
CONOUT_OUTPUTSTRING equ 8

org 0
dos_header:
    db "MZ"
    times 0x3c - ($ - $$) db 0
    dd pe_header                ; e_lfanew

pe_header:
    db "PE", 0, 0
    dw 0x8664                   ; machine: x86-64
    dw 1                        ; sections
    dd 0                        ; time stamp
    dd 0, 0                     ; symbol table, symbols
    dw optional_end - optional  ; optional header size
    dw 0x0022                   ; executable, large-address aware
optional:
    dw 0x020b                   ; PE32+
    dw 0                        ; linker version
    dd SECTION_SIZE             ; size of code
    dd 0, 0                     ; initialised, uninitialised data
    dd SECTION_RVA + (efi_main - section_start)
    dd SECTION_RVA              ; base of code
    dq 0x400000                 ; preferred image base
    dd 0x1000                   ; section alignment
    dd 0x200                    ; file alignment
    times 6 dw 0                ; OS, image and subsystem versions
    dd 0                        ; reserved
    dd SECTION_RVA + 0x1000     ; size of image
    dd SECTION_FILE             ; size of headers
    dd 0                        ; checksum
    dw 10                       ; subsystem: EFI application
    dw 0                        ; DLL characteristics
    dq 0x10000, 0x1000          ; stack reserve, commit
    dq 0x10000, 0x1000          ; heap reserve, commit
    dd 0                        ; loader flags
    dd 16                       ; data directory entries (all empty)
    times 16 * 8 db 0
optional_end:

section_table:
    db ".text", 0, 0, 0
    dd 0x1000                   ; virtual size
    dd SECTION_RVA
    dd SECTION_SIZE             ; raw size
    dd SECTION_FILE             ; raw offset
    dd 0, 0                     ; relocations, line numbers
    dw 0, 0
    dd 0xe0000060               ; code, initialised data, execute, read, write

    times SECTION_FILE - ($ - $$) db 0

section_start:
efi_main:                       ; RCX = image handle, RDX = system table
    push rbx
    push rsi
    sub rsp, 40                 ; 32 bytes shadow space, 16-byte aligned calls
    mov rbx, rdx

    lea rsi, [line_ascii]
.byte:
    lodsb
    test al, al
    jz .console
    mov ah, al
    mov ecx, 0x100000           ; bounded wait for the transmitter
    mov dx, 0x3fd
.busy:
    in al, dx
    test al, 0x20
    jnz .send
    loop .busy
.send:
    mov al, ah
    mov dx, 0x3f8
    out dx, al
    jmp .byte

.console:
    mov rcx, [rbx + SYSTAB_CONOUT]
    lea rdx, [line_utf16]
    call [rcx + CONOUT_OUTPUTSTRING]

.halt:
    cli
    hlt
    jmp .halt

line_ascii:
    db 13, 10, "e2e-efi: BOOTX64.EFI runs from the iSCSI disk", 13, 10
    db "SANBOOT-OK (UEFI)", 13, 10, 0
align 2
line_utf16:
    dw __utf16__(`e2e-efi: hello through ConOut\r\n`), 0

    times SECTION_FILE + SECTION_SIZE - ($ - $$) db 0
