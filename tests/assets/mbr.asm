; mbr.asm: boot sector of the e2e test disk (assembled by the harness with
; `nasm -f bin`, exactly 512 bytes).
;
; It proves that iPXE's INT 13h emulation, backed by sanboot's iSCSI target,
; serves what a real boot loader asks for: the EDD calls, a multi-sector
; extended read, a read of the disk's last LBA (64-bit arithmetic, so LUNs
; beyond 2 TiB work too) and a legacy CHS read. Everything is written to the
; COM1 UART directly (port 0x3f8), so the result reaches QEMU's serial log
; whatever the video setup. The disk builder (tests/src/disk.rs) stores a
; text line at LBA 1, 2, 8 and the last LBA; this code prints each line it
; reads back, then "SANBOOT-OK". A failing call prints
; "SANBOOT-FAIL:<step> AH=<status>" and halts. Steps: E = AH=41h, G = AH=48h,
; M = AH=42h LBA 1..8, L = AH=42h last LBA, C = AH=02h CHS 0/0/3.

bits 16
org 0x7c00

MULTI_BUF equ 0x8000            ; LBA 1..8 land here (8 x 512 bytes)
LAST_BUF  equ 0xa000            ; the last LBA
CHS_BUF   equ 0xa400            ; CHS 0/0/3 = LBA 2
GEOM      equ 0x7e00            ; AH=48h result buffer (0x1e bytes)
DRIVE     equ 0x7e40            ; DL at entry
STEP      equ 0x7e41            ; step letter for failure messages

    jmp 0x0000:main             ; some loaders enter at 07c0:0000
main:
    xor ax, ax
    mov ds, ax
    mov es, ax
    cli
    mov ss, ax
    mov sp, 0x7c00
    sti
    cld
    mov [DRIVE], dl

    mov si, txt_hello
    call print
    mov al, [DRIVE]
    call hex8
    call newline

    mov byte [STEP], 'E'        ; INT 13h extensions installed?
    mov ah, 0x41
    mov bx, 0x55aa
    call disk
    cmp bx, 0xaa55
    jne failed

    mov byte [STEP], 'G'        ; extended drive parameters
    mov word [GEOM], 0x1e
    mov ah, 0x48
    mov si, GEOM
    call disk
    mov si, txt_sectors
    call print
    mov eax, [GEOM + 0x14]      ; total sectors, high dword
    call hex32
    mov eax, [GEOM + 0x10]      ; low dword
    call hex32
    call newline

    mov byte [STEP], 'M'        ; LBA 1..8 in one call
    mov si, dap_multi
    mov ah, 0x42
    call disk
    mov si, MULTI_BUF
    call print_line
    mov si, MULTI_BUF + 7 * 512
    call print_line

    mov byte [STEP], 'L'        ; the last LBA = total - 1
    mov eax, [GEOM + 0x10]
    mov edx, [GEOM + 0x14]
    sub eax, 1
    sbb edx, 0
    mov [dap_last + 8], eax
    mov [dap_last + 12], edx
    mov si, dap_last
    mov ah, 0x42
    call disk
    mov si, LAST_BUF
    call print_line

    mov byte [STEP], 'C'        ; cylinder 0, head 0, sector 3
    mov ax, 0x0201
    mov cx, 0x0003
    xor dh, dh
    mov bx, CHS_BUF
    call disk
    mov si, CHS_BUF
    call print_line

    mov si, txt_ok
    call print
    jmp stop

failed:
    mov bl, ah                  ; INT 13h status
    mov si, txt_fail
    call print
    mov al, [STEP]
    call putc
    mov si, txt_ah
    call print
    mov al, bl
    call hex8
    call newline
stop:
    cli
    hlt
    jmp stop

disk:                           ; INT 13h on the boot drive; CF set = failed
    mov dl, [DRIVE]
    int 0x13
    jc failed
    ret

; ---- COM1 output -------------------------------------------------------

putc:                           ; AL: byte to send; waits (bounded) for THR empty
    push dx
    push cx
    push ax
    mov dx, 0x3fd
    mov cx, 0x8000
.busy:
    in al, dx
    test al, 0x20
    jnz .send
    loop .busy
.send:
    pop ax
    mov dx, 0x3f8
    out dx, al
    pop cx
    pop dx
    ret

print:                          ; DS:SI: NUL-terminated text
    lodsb
    or al, al
    jz .end
    call putc
    jmp print
.end:
    ret

print_line:                     ; a sector's text, then CR LF
    call print
newline:
    mov al, 13
    call putc
    mov al, 10
    jmp putc

hex32:                          ; EAX
    push eax
    shr eax, 16
    call hex16
    pop eax
hex16:                          ; AX
    push ax
    mov al, ah
    call hex8
    pop ax
hex8:                           ; AL
    push ax
    shr al, 4
    call .digit
    pop ax
    and al, 0x0f
.digit:
    and al, 0x0f
    cmp al, 10
    jb .num
    add al, 'a' - 10 - '0'
.num:
    add al, '0'
    jmp putc

txt_hello:   db 13, 10, "e2e-mbr dl=0x", 0
txt_sectors: db "e2e-mbr sectors=0x", 0
txt_ok:      db "SANBOOT-OK", 13, 10, 0
txt_fail:    db "SANBOOT-FAIL:", 0
txt_ah:      db " AH=0x", 0

align 4
dap_multi:                      ; disk address packets for AH=42h
    db 16, 0
    dw 8                        ; sectors
    dw MULTI_BUF, 0             ; offset, segment
    dq 1                        ; first LBA
dap_last:
    db 16, 0
    dw 1
    dw LAST_BUF, 0
    dq 0                        ; filled in at run time

    times 446 - ($ - $$) db 0
    times 64 db 0               ; partition table (the disk builder may add an ESP)
    dw 0xaa55
