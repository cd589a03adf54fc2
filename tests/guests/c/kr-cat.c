/*
 * "Copy input to output; 2nd version": the file-copying program from
 * Kernighan and Ritchie, The C Programming Language, section 1.5.1,
 * typed in as the book prints it (K&R C: `main()` without a type).
 *
 * Not written for this project, nor for WebAssembly: the toolchains test
 * compiles it with Debian's clang and wasi-libc (WASI preview 1), wraps it
 * with wasmtime's preview 1 adapter into a component, and serves it with
 * --per-client. stdio buffers its output, so, as under inetd, a client
 * gets the echo when it closes its side (or every 4 KiB).
 */
#include <stdio.h>

main()
{
    int c;

    while ((c = getchar()) != EOF)
        putchar(c);
}
