/* Network side of the client: the REQ socket to the broker (lazy pirate), the SUB socket to
 * the proxy, the Lamport clock and the display of publications. */
#ifndef BBD_REDE_H
#define BBD_REDE_H

#include "mp.h"

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NAME_MAX_CHARS 64 /* protocol: names are 1 to 64 characters */

typedef struct { const char *key; const char *val; size_t len; } campo_t;

typedef struct {
    char *p;
    size_t n;
} topico_t;

typedef struct {
    void *ctx;
    void *req;               /* NULL until needed; recreated after every timeout */
    void *sub;
    const char *broker;
    const char *proxy;
    int timeout_ms;
    int tries;
    uint64_t clock;          /* Lamport */
    char id_prefix[40];
    uint64_t seq;
    char user[4 * NAME_MAX_CHARS + 1]; /* logged-in user, "" if none */
    size_t user_len;
    topico_t *chans;         /* channels subscribed with [7] */
    size_t nchans;
    const char *prompt;      /* prompt on screen, reprinted after a publication */
    void (*reeco)(void *);   /* ... followed by what was typed so far, if set */
    void *reeco_ctx;
} rede_t;

/* Set by the SIGTERM / SIGINT / SIGHUP handler: every wait gives up and the client exits. */
extern volatile sig_atomic_t bbd_parar;

typedef struct {
    char *buf;               /* reply bytes; the decoded objects point into it */
    msgpack_unpacked u;
    const msgpack_object *data; /* the reply's data map, or NULL if it has none */
} resposta_t;

/* Returns 0, or -1 with a message on stderr (bad endpoint, no memory). */
int rede_init(rede_t *r, const char *broker, const char *proxy, int timeout_ms);
void rede_close(rede_t *r);

/* Sends {"service", "data": {fields..., timestamp, clock, id}} and waits for the reply,
 * retrying with the same id. Returns true with *out filled (free with resposta_free), or
 * false after printing why. Publications arriving meanwhile are shown. */
bool rede_pedido(rede_t *r, const char *service, const campo_t *fields, size_t nfields,
                 resposta_t *out);
void resposta_free(resposta_t *resp);

/* Asks for a list (`users` or `channels`) and tells whether `name` is in it: 1 yes, 0 no,
 * -1 if the list could not be had (the reason is shown). */
int rede_na_lista(rede_t *r, const char *service, const char *name, size_t n);

/* Handles every publication waiting on the SUB socket. */
void rede_publicacoes(rede_t *r);

/* Subscribes to a user's private messages (replacing the previous user) or to a channel.
 * rede_canal returns 1 if subscribed, 0 if it already was, -1 on error. */
int rede_set_user(rede_t *r, const char *name, size_t n);
int rede_canal(rede_t *r, const char *name, size_t n);

#endif
