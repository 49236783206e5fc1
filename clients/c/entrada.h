/* Line input from stdin that keeps showing publications while it waits. It reads fd 0
 * directly (no stdio buffering) so that polling fd 0 never misses lines already read.
 *
 * On a terminal in its normal (canonical) mode the kernel caps a line at 4095 bytes and
 * silently drops the rest, so the client takes the line editing over: the terminal goes to
 * non-canonical mode, typed text is echoed here, and Backspace, Ctrl-U and Ctrl-D work as
 * usual. The terminal is restored on exit. */
#ifndef BBD_ENTRADA_H
#define BBD_ENTRADA_H

#include "rede.h"

#include <stdbool.h>
#include <stddef.h>
#include <termios.h>

#define LINE_MAX_CHARS 65536              /* protocol: a message is up to 65,536 characters */
#define LINE_MAX_BYTES (4 * LINE_MAX_CHARS) /* ... of up to 4 bytes each in UTF-8 */

typedef struct {
    char buf[LINE_MAX_BYTES + 2]; /* room for the line, '\r' and '\n' */
    size_t len;
    bool eof;
    bool discarding;              /* inside an over-long line, dropping until its newline */
    bool editing;                 /* we edit lines ourselves (terminal in non-canonical mode) */
    bool echo;                    /* ... and echo what is typed */
    struct termios saved;         /* the terminal's mode before, restored by entrada_fim */
    const char *prompt;           /* the prompt on screen, redrawn by Ctrl-U */
} entrada_t;

enum { LINHA_OK, LINHA_LONGA, LINHA_FIM };

/* Takes over line editing if stdin is a terminal in canonical mode. */
void entrada_inicio(entrada_t *in, rede_t *r);
/* Gives the terminal its mode back (safe to call more than once). */
void entrada_fim(entrada_t *in);

/* Prints `prompt`, then waits for one line. On LINHA_OK the line (no newline, NUL-terminated,
 * may contain NUL bytes) is in out[0..*n); `out` must hold LINE_MAX_BYTES + 1 bytes.
 * LINHA_LONGA: the line was too long and was discarded. LINHA_FIM: end of input, or a
 * stop signal (SIGTERM, SIGINT, SIGHUP). */
int entrada_linha(entrada_t *in, rede_t *r, const char *prompt, char *out, size_t *n);

#endif
