#include "rede.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

/* Bounds what ZeroMQ accepts from a peer, so a broken server cannot make us buffer
 * arbitrarily large frames; history replies are far below this. */
static const int64_t MAX_FRAME = 16 * 1024 * 1024;

volatile sig_atomic_t bbd_parar = 0;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double epoch_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Lamport receive rule. Values beyond INT64_MAX are ignored: other implementations decode
 * the clock as a signed 64-bit integer. */
static void lamport_recv(rede_t *r, const msgpack_object *map)
{
    uint64_t v;
    if (mp_uint(mp_get(map, "clock"), &v) && v <= INT64_MAX && v > r->clock)
        r->clock = v;
}

static void lamport_send(rede_t *r)
{
    if (r->clock < INT64_MAX)
        r->clock++;
}

static void set_common_opts(void *s)
{
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero); /* never block exit on unsent data */
    zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &MAX_FRAME, sizeof MAX_FRAME);
}

static int req_open(rede_t *r)
{
    r->req = zmq_socket(r->ctx, ZMQ_REQ);
    if (!r->req)
        return -1;
    set_common_opts(r->req);
    zmq_setsockopt(r->req, ZMQ_SNDTIMEO, &r->timeout_ms, sizeof r->timeout_ms);
    if (zmq_connect(r->req, r->broker) != 0) {
        zmq_close(r->req);
        r->req = NULL;
        return -1;
    }
    return 0;
}

static void req_close(rede_t *r)
{
    if (r->req)
        zmq_close(r->req);
    r->req = NULL;
}

int rede_init(rede_t *r, const char *broker, const char *proxy, int timeout_ms)
{
    memset(r, 0, sizeof *r);
    r->broker = broker;
    r->proxy = proxy;
    r->timeout_ms = timeout_ms;
    r->tries = 3;

    /* Request ids must be unique across clients and runs: random prefix + sequence. */
    unsigned char rnd[8];
    if (getrandom(rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd) {
        uint64_t x = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)now_ms();
        memcpy(rnd, &x, sizeof rnd);
    }
    int off = snprintf(r->id_prefix, sizeof r->id_prefix, "c-");
    for (size_t i = 0; i < sizeof rnd; i++)
        off += snprintf(r->id_prefix + off, sizeof r->id_prefix - off, "%02x", rnd[i]);

    r->ctx = zmq_ctx_new();
    if (!r->ctx) {
        fprintf(stderr, "Erro: zmq_ctx_new: %s\n", zmq_strerror(errno));
        return -1;
    }
    if (req_open(r) != 0) {
        fprintf(stderr, "Erro: endpoint do broker invalido '%s': %s\n", broker, zmq_strerror(errno));
        return -1;
    }
    r->sub = zmq_socket(r->ctx, ZMQ_SUB);
    if (!r->sub) {
        fprintf(stderr, "Erro: zmq_socket: %s\n", zmq_strerror(errno));
        return -1;
    }
    set_common_opts(r->sub);
    if (zmq_connect(r->sub, proxy) != 0) {
        fprintf(stderr, "Erro: endpoint do proxy invalido '%s': %s\n", proxy, zmq_strerror(errno));
        return -1;
    }
    return 0;
}

void rede_close(rede_t *r)
{
    req_close(r);
    if (r->sub)
        zmq_close(r->sub);
    r->sub = NULL;
    for (size_t i = 0; i < r->nchans; i++)
        free(r->chans[i].p);
    free(r->chans);
    r->chans = NULL;
    r->nchans = 0;
    if (r->ctx)
        zmq_ctx_term(r->ctx);
    r->ctx = NULL;
}

void resposta_free(resposta_t *resp)
{
    if (resp->buf) {
        msgpack_unpacked_destroy(&resp->u);
        free(resp->buf);
    }
    memset(resp, 0, sizeof *resp);
}

static int encode(rede_t *r, msgpack_sbuffer *sb, const char *service, const campo_t *fields,
                  size_t nfields, const char *id)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    int rc = 0;
    rc |= msgpack_pack_map(&pk, 2);
    rc |= mp_pack_cstr(&pk, "service");
    rc |= mp_pack_cstr(&pk, service);
    rc |= mp_pack_cstr(&pk, "data");
    rc |= msgpack_pack_map(&pk, nfields + 3);
    for (size_t i = 0; i < nfields; i++) {
        rc |= mp_pack_cstr(&pk, fields[i].key);
        rc |= mp_pack_str(&pk, fields[i].val, fields[i].len);
    }
    rc |= mp_pack_cstr(&pk, "timestamp");
    rc |= msgpack_pack_double(&pk, epoch_seconds());
    rc |= mp_pack_cstr(&pk, "clock");
    rc |= msgpack_pack_uint64(&pk, r->clock);
    rc |= mp_pack_cstr(&pk, "id");
    rc |= mp_pack_cstr(&pk, id);
    return rc ? -1 : 0;
}

/* Reads the reply waiting on the REQ socket. Returns 1 with *out filled, 0 if the reply was
 * unusable (already reported), -1 if nothing could be read. */
static int receive_reply(rede_t *r, resposta_t *out)
{
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    if (zmq_msg_recv(&msg, r->req, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&msg);
        return -1;
    }
    size_t n = zmq_msg_size(&msg);
    char *buf = malloc(n ? n : 1);
    if (buf)
        memcpy(buf, zmq_msg_data(&msg), n);
    /* A REQ reply should be one frame; drop any extra ones. */
    int more = zmq_msg_more(&msg);
    while (more) {
        if (zmq_msg_recv(&msg, r->req, ZMQ_DONTWAIT) < 0)
            break;
        more = zmq_msg_more(&msg);
    }
    zmq_msg_close(&msg);
    if (!buf) {
        printf("Erro: memoria insuficiente para a resposta\n");
        return 0;
    }
    msgpack_unpacked_init(&out->u);
    out->buf = buf;
    const msgpack_object *top = NULL;
    if (mp_decode(&out->u, buf, n))
        top = mp_map(&out->u.data);
    if (!top) {
        printf("Erro: resposta invalida do servidor (nao e um mapa MessagePack)\n");
        resposta_free(out);
        return 0;
    }
    out->data = mp_map(mp_get(top, "data"));
    if (!out->data)
        out->data = mp_map(mp_get(top, "dados"));
    lamport_recv(r, out->data);
    return 1;
}

bool rede_pedido(rede_t *r, const char *service, const campo_t *fields, size_t nfields,
                 resposta_t *out)
{
    memset(out, 0, sizeof *out);
    char id[64];
    snprintf(id, sizeof id, "%s-%llu", r->id_prefix, (unsigned long long)++r->seq);
    lamport_send(r);

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (encode(r, &sb, service, fields, nfields, id) != 0) {
        msgpack_sbuffer_destroy(&sb);
        printf("Erro: falha ao montar o pedido\n");
        return false;
    }

    bool ok = false, done = false;
    for (int attempt = 1; attempt <= r->tries && !done; attempt++) {
        if (!r->req && req_open(r) != 0) {
            printf("Erro: nao foi possivel criar o socket: %s\n", zmq_strerror(errno));
            break;
        }
        /* Retries resend the same bytes, hence the same id: the server applies a write once. */
        if (zmq_send(r->req, sb.data, sb.size, 0) >= 0) {
            int64_t deadline = now_ms() + r->timeout_ms;
            for (;;) {
                if (bbd_parar) {
                    done = true;
                    break;
                }
                int64_t left = deadline - now_ms();
                if (left <= 0)
                    break;
                zmq_pollitem_t items[2] = {
                    { r->req, 0, ZMQ_POLLIN, 0 },
                    { r->sub, 0, ZMQ_POLLIN, 0 },
                };
                int rc = zmq_poll(items, 2, (long)left);
                if (rc < 0 && errno == EINTR && bbd_parar) {
                    done = true; /* stopping: no retry, no message */
                    break;
                }
                if (rc < 0) {
                    if (errno == EINTR)
                        continue;
                    break;
                }
                if (items[1].revents & ZMQ_POLLIN)
                    rede_publicacoes(r);
                if (items[0].revents & ZMQ_POLLIN) {
                    int got = receive_reply(r, out);
                    if (got >= 0) {
                        ok = got == 1;
                        done = true;
                        break;
                    }
                }
            }
        }
        if (done)
            break;
        /* A REQ socket that sent without a reply cannot send again: replace it. */
        req_close(r);
        if (attempt < r->tries)
            printf("Sem resposta em %d ms, tentando de novo (%d/%d)...\n", r->timeout_ms,
                   attempt + 1, r->tries);
        else
            printf("Erro: servidor indisponivel (broker %s)\n", r->broker);
        fflush(stdout);
    }
    msgpack_sbuffer_destroy(&sb);
    return ok;
}

int rede_na_lista(rede_t *r, const char *service, const char *name, size_t n)
{
    resposta_t resp;
    if (!rede_pedido(r, service, NULL, 0, &resp))
        return -1;
    const msgpack_object *list = mp_get(resp.data, service);
    int found = -1;
    if (list && list->type == MSGPACK_OBJECT_ARRAY) {
        found = 0;
        for (uint32_t i = 0; i < list->via.array.size && !found; i++) {
            const char *p;
            size_t len;
            if (mp_str(&list->via.array.ptr[i], &p, &len) && len == n && memcmp(p, name, n) == 0)
                found = 1;
        }
    } else {
        printf("Erro: resposta sem a lista '%s'\n", service);
    }
    resposta_free(&resp);
    return found;
}

static ssize_t chan_index(const rede_t *r, const char *p, size_t n)
{
    for (size_t i = 0; i < r->nchans; i++)
        if (r->chans[i].n == n && memcmp(r->chans[i].p, p, n) == 0)
            return (ssize_t)i;
    return -1;
}

static void show_publication(rede_t *r, const char *topic, size_t tn, const char *body, size_t bn)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    const msgpack_object *m = mp_decode(&u, body, bn) ? mp_map(&u.data) : NULL;
    if (!m)
        goto out;
    /* Payloads are flat maps; also accept the nested {"service","data"} form. */
    const msgpack_object *f = m;
    if (!mp_get(m, "message") && mp_map(mp_get(m, "data")))
        f = mp_get(m, "data");
    const msgpack_object *service = mp_get(m, "service");
    bool priv = mp_str_eq(service, "message");
    bool post = mp_str_eq(service, "publish");
    if (!priv && !post) {
        priv = mp_get(f, "dst") != NULL;
        post = !priv && mp_get(f, "channel") != NULL;
    }
    /* ZeroMQ filters by prefix: only an exact topic match is ours. */
    bool to_me = r->user_len > 0 && tn == r->user_len && memcmp(topic, r->user, tn) == 0;
    bool to_chan = chan_index(r, topic, tn) >= 0;
    if (!((priv && to_me) || (post && to_chan)))
        goto out;

    lamport_recv(r, f);
    if (r->prompt)
        putchar('\n');
    if (priv) {
        fputs("[privada] ", stdout);
        if (mp_get(f, "src"))
            mp_print_field(stdout, f, "src", "?");
        else
            mp_print_field(stdout, f, "user", "?");
        fputs(" -> ", stdout);
        mp_print_text(stdout, topic, tn);
    } else {
        fputs("[canal ", stdout);
        mp_print_text(stdout, topic, tn);
        fputs("] ", stdout);
        mp_print_field(stdout, f, "user", "?");
    }
    fputs(": ", stdout);
    mp_print_field(stdout, f, "message", "");
    putchar('\n');
    if (r->prompt) {
        fputs(r->prompt, stdout);
        if (r->reeco)
            r->reeco(r->reeco_ctx);
    }
    fflush(stdout);
out:
    msgpack_unpacked_destroy(&u);
}

void rede_publicacoes(rede_t *r)
{
    for (;;) {
        zmq_msg_t topic, body;
        zmq_msg_init(&topic);
        if (zmq_msg_recv(&topic, r->sub, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&topic);
            return;
        }
        zmq_msg_init(&body);
        bool two = false;
        if (zmq_msg_more(&topic) && zmq_msg_recv(&body, r->sub, ZMQ_DONTWAIT) >= 0) {
            two = true;
            /* Drain frames beyond the expected two so the next read starts a new message. */
            zmq_msg_t extra;
            zmq_msg_init(&extra);
            int more = zmq_msg_more(&body);
            while (more && zmq_msg_recv(&extra, r->sub, ZMQ_DONTWAIT) >= 0)
                more = zmq_msg_more(&extra);
            zmq_msg_close(&extra);
        }
        if (two)
            show_publication(r, zmq_msg_data(&topic), zmq_msg_size(&topic), zmq_msg_data(&body),
                             zmq_msg_size(&body));
        zmq_msg_close(&body);
        zmq_msg_close(&topic);
    }
}

int rede_set_user(rede_t *r, const char *name, size_t n)
{
    if (n >= sizeof r->user)
        return -1;
    if (r->user_len == n && memcmp(r->user, name, n) == 0)
        return 0;
    /* Subscriptions are reference counted by ZeroMQ, so dropping the old user's topic keeps
     * a channel of the same name subscribed. */
    if (r->user_len > 0)
        zmq_setsockopt(r->sub, ZMQ_UNSUBSCRIBE, r->user, r->user_len);
    r->user_len = 0;
    r->user[0] = '\0';
    if (zmq_setsockopt(r->sub, ZMQ_SUBSCRIBE, name, n) != 0)
        return -1;
    memcpy(r->user, name, n);
    r->user[n] = '\0';
    r->user_len = n;
    return 1;
}

int rede_canal(rede_t *r, const char *name, size_t n)
{
    if (chan_index(r, name, n) >= 0)
        return 0;
    topico_t *grown = realloc(r->chans, (r->nchans + 1) * sizeof *grown);
    if (!grown)
        return -1;
    r->chans = grown;
    char *copy = malloc(n + 1);
    if (!copy)
        return -1;
    memcpy(copy, name, n);
    copy[n] = '\0';
    if (zmq_setsockopt(r->sub, ZMQ_SUBSCRIBE, name, n) != 0) {
        free(copy);
        return -1;
    }
    r->chans[r->nchans].p = copy;
    r->chans[r->nchans].n = n;
    r->nchans++;
    return 1;
}
