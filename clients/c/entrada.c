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

static int next_line(entrada_t *in, rede_t *r, char *out, size_t *n)
{
    for (;;) {
        int rc = take_line(in, out, n);
        if (rc >= 0)
            return rc;
        if (in->len == sizeof in->buf) {
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
            if (in->len == 0)
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
                continue;
            in->eof = true; /* poll itself broken: stop rather than spin */
            continue;
        }
        if (items[1].revents & ZMQ_POLLIN)
            rede_publicacoes(r);
        if (items[0].revents & (ZMQ_POLLIN | ZMQ_POLLERR)) {
            ssize_t got = read(0, in->buf + in->len, sizeof in->buf - in->len);
            if (got > 0)
                in->len += (size_t)got;
            else if (got == 0 || (errno != EINTR && errno != EAGAIN))
                in->eof = true; /* EOF, or a hung-up terminal (EIO) */
        }
    }
}

int entrada_linha(entrada_t *in, rede_t *r, const char *prompt, char *out, size_t *n)
{
    fputs(prompt, stdout);
    fflush(stdout);
    r->prompt = prompt;
    int rc = next_line(in, r, out, n);
    r->prompt = NULL;
    if (rc == LINHA_FIM)
        putchar('\n');
    return rc;
}
