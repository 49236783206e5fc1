#include "entrada.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

/* Takes a complete line out of the buffer if there is one. Returns -1 if none yet. */
static int take_line(entrada_t *in, char *out, size_t *n)
{
    char *nl = memchr(in->buf, '\n', in->len);
    if (!nl)
        return -1;
    size_t used = (size_t)(nl - in->buf) + 1;
    size_t len = used - 1;
    if (len > 0 && in->buf[len - 1] == '\r')
        len--;
    int rc;
    if (in->discarding || len > LINE_MAX_BYTES) {
        rc = LINHA_LONGA;
        in->discarding = false;
        *n = 0;
    } else {
        memcpy(out, in->buf, len);
        *n = len;
        rc = LINHA_OK;
    }
    out[*n] = '\0';
    memmove(in->buf, in->buf + used, in->len - used);
    in->len -= used;
    return rc;
}

/* Where the line being typed starts: after the last complete line still buffered. */
static size_t partial_start(const entrada_t *in)
{
    for (size_t i = in->len; i > 0; i--)
        if (in->buf[i - 1] == '\n')
            return i;
    return 0;
}

/* Reprints the line being typed, after a publication interrupted it on screen. */
static void reecho(void *ctx)
{
    entrada_t *in = ctx;
    size_t start = partial_start(in);
    if (in->echo && in->len > start)
        fwrite(in->buf + start, 1, in->len - start, stdout);
}

/* Line editing in non-canonical mode: Enter ends a line, Backspace erases a character
 * (a whole UTF-8 sequence), Ctrl-U the line, Ctrl-D on an empty line ends input; escape
 * sequences (arrow keys) and other control characters are ignored. */
static void edit(entrada_t *in, const char *p, size_t n)
{
    static int esc; /* 0: none, 1: after ESC, 2: inside ESC [ ... */
    static bool last_cr;
    char echo[4096];
    size_t e = 0;
    size_t start = partial_start(in);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c != '\n')
            last_cr = last_cr && c == '\r';
        if (e + 8 > sizeof echo) {
            fwrite(echo, 1, e, stdout);
            e = 0;
        }
        if (esc == 1) {
            esc = (c == '[' || c == 'O') ? 2 : 0;
            continue;
        }
        if (esc == 2) {
            if (c >= 0x40 && c <= 0x7e)
                esc = 0;
            continue;
        }
        if (c == 0x1b) {
            esc = 1;
        } else if (c == '\n' || c == '\r') {
            bool crlf = c == '\n' && last_cr;
            last_cr = c == '\r';
            if (crlf)
                continue; /* one line end, whether the terminal sends CR, LF or both */
            in->buf[in->len++] = '\n';
            echo[e++] = '\n';
            start = in->len;
        } else if (c == 0x7f || c == 0x08) {
            if (in->len > start) {
                do
                    in->len--;
                while (in->len > start && ((unsigned char)in->buf[in->len] & 0xc0) == 0x80);
                memcpy(echo + e, "\b \b", 3);
                e += 3;
            }
        } else if (c == 0x15) {
            if (in->len > start) {
                in->len = start;
                if (in->echo) { /* redraw the prompt alone on a cleared line */
                    fwrite(echo, 1, e, stdout);
                    printf("\r\x1b[K%s", in->prompt ? in->prompt : "");
                }
                e = 0;
            }
        } else if (c == 0x04) {
            if (in->len == start)
                in->eof = true;
        } else if (c >= 0x20 || c == '\t') {
            if (in->discarding)
                continue; /* an over-long line: dropped up to its newline */
            if (in->len < sizeof in->buf - 2) {
                in->buf[in->len++] = (char)c;
                echo[e++] = (char)c;
            } else {
                in->discarding = true; /* take_line reports it when its newline comes */
                in->len = start;
            }
        }
    }
    if (in->echo && e > 0)
        fwrite(echo, 1, e, stdout);
    fflush(stdout);
}

static int next_line(entrada_t *in, rede_t *r, char *out, size_t *n)
{
    for (;;) {
        if (bbd_parar)
            return LINHA_FIM;
        int rc = take_line(in, out, n);
        if (rc >= 0)
            return rc;
        if (in->len >= sizeof in->buf - 1) {
            /* Full buffer without a newline: the line is too long; skip to its end. */
            in->discarding = true;
            in->len = 0;
        }
        if (in->eof) {
            /* Last line without a trailing newline still counts. */
            *n = 0;
            out[0] = '\0';
            if (in->discarding) {
                in->discarding = false;
                in->len = 0;
                return LINHA_LONGA;
            }
            if (in->len == 0 || in->editing)
                return LINHA_FIM;
            in->buf[in->len++] = '\n';
            continue;
        }
        zmq_pollitem_t items[2] = {
            { NULL, 0, ZMQ_POLLIN, 0 },
            { r->sub, 0, ZMQ_POLLIN, 0 },
        };
        if (zmq_poll(items, 2, -1) < 0) {
            if (errno == EINTR)
                continue; /* a stop signal is seen at the top of the loop */
            in->eof = true; /* poll itself broken: stop rather than spin */
            continue;
        }
        if (items[1].revents & ZMQ_POLLIN)
            rede_publicacoes(r);
        if (items[0].revents & (ZMQ_POLLIN | ZMQ_POLLERR)) {
            char chunk[4096];
            size_t room = sizeof in->buf - 1 - in->len;
            ssize_t got = read(0, in->editing ? chunk : in->buf + in->len,
                               in->editing ? sizeof chunk : room);
            if (got > 0 && in->editing)
                edit(in, chunk, (size_t)got);
            else if (got > 0)
                in->len += (size_t)got;
            else if (got == 0 || (errno != EINTR && errno != EAGAIN))
                in->eof = true; /* EOF, or a hung-up terminal (EIO) */
        }
    }
}

void entrada_inicio(entrada_t *in, rede_t *r)
{
    r->reeco = reecho;
    r->reeco_ctx = in;
    if (!isatty(0) || tcgetattr(0, &in->saved) != 0 || !(in->saved.c_lflag & ICANON))
        return; /* a pipe, or a terminal already set up by whoever runs us */
    struct termios t = in->saved;
    t.c_lflag &= ~(tcflag_t)(ICANON | ECHO); /* ISIG stays: Ctrl-C still stops us */
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    if (tcsetattr(0, TCSANOW, &t) == 0) {
        in->editing = true;
        in->echo = (in->saved.c_lflag & ECHO) != 0;
    }
}

void entrada_fim(entrada_t *in)
{
    if (in->editing)
        tcsetattr(0, TCSANOW, &in->saved);
    in->editing = false;
}

int entrada_linha(entrada_t *in, rede_t *r, const char *prompt, char *out, size_t *n)
{
    fputs(prompt, stdout);
    fflush(stdout);
    r->prompt = in->prompt = prompt;
    int rc = next_line(in, r, out, n);
    r->prompt = in->prompt = NULL;
    if (rc == LINHA_FIM)
        putchar('\n');
    return rc;
}
