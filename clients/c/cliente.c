/* BulletInBoard interactive client: menu on stdin, requests to the broker (REQ, lazy
 * pirate), publications from the proxy (SUB) shown as they arrive. See docs/protocol.md. */
#include "entrada.h"
#include "mp.h"
#include "rede.h"
#include "traducao.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    rede_t rede;
    entrada_t in;
    char line[LINE_MAX_BYTES + 1];
    char line2[LINE_MAX_BYTES + 1]; /* second input of publish / private message */
} app_t;

enum { ASK_OK, ASK_INVALID, ASK_EOF };

static bool utf8_valid(const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) { i++; continue; }
        else if (c >= 0xc2 && c <= 0xdf) { k = 1; cp = c & 0x1f; }
        else if (c >= 0xe0 && c <= 0xef) { k = 2; cp = c & 0x0f; }
        else if (c >= 0xf0 && c <= 0xf4) { k = 3; cp = c & 0x07; }
        else return false;
        if (n - i <= k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        /* Reject overlongs, surrogates and values past U+10FFFF. */
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

static size_t utf8_chars(const char *p, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)p[i] & 0xc0) != 0x80)
            count++;
    return count;
}

static void trim(char **p, size_t *n)
{
    while (*n > 0 && (**p == ' ' || **p == '\t')) {
        (*p)++;
        (*n)--;
    }
    while (*n > 0 && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
        (*n)--;
}

/* Reads one line into buf (LINE_MAX_BYTES + 1 bytes). An over-long line is reported and
 * yields ASK_INVALID, but still counts as the line, so scripted input stays in step. */
static int read_line(app_t *a, const char *prompt, char *buf, size_t *n)
{
    int rc = entrada_linha(&a->in, &a->rede, prompt, buf, n);
    if (rc == LINHA_FIM)
        return ASK_EOF;
    if (rc == LINHA_LONGA) {
        printf("Erro: linha muito longa (maximo %d caracteres), ignorada\n", LINE_MAX_CHARS);
        return ASK_INVALID;
    }
    return ASK_OK;
}

static bool check_text(const char *p, size_t n, bool allow_empty)
{
    if (!utf8_valid(p, n)) {
        printf("Erro: texto nao e UTF-8 valido\n");
        return false;
    }
    if (n == 0 && !allow_empty) {
        printf("Erro: valor vazio\n");
        return false;
    }
    if (utf8_chars(p, n) > LINE_MAX_CHARS) {
        printf("Erro: texto muito longo (maximo %d caracteres)\n", LINE_MAX_CHARS);
        return false;
    }
    return true;
}

/* Names are trimmed and limited to NAME_MAX_CHARS here; the server validates the rest. */
static bool check_name(char **p, size_t *n, bool allow_empty)
{
    trim(p, n);
    (*p)[*n] = '\0';
    if (!check_text(*p, *n, allow_empty))
        return false;
    if (utf8_chars(*p, *n) > NAME_MAX_CHARS) {
        printf("Erro: nome muito longo (maximo %d caracteres)\n", NAME_MAX_CHARS);
        return false;
    }
    return true;
}

/* Reads one name into app->line. */
static int ask_name(app_t *a, const char *prompt, bool allow_empty, char **out, size_t *n)
{
    int rc = read_line(a, prompt, a->line, n);
    if (rc != ASK_OK)
        return rc;
    *out = a->line;
    return check_name(out, n, allow_empty) ? ASK_OK : ASK_INVALID;
}

/* Prints "Erro: <text>" if the reply's status is an error; returns true if it was one.
 * Any status other than the success word also counts as an error. */
static bool report_status(const msgpack_object *data, const char *success)
{
    const msgpack_object *st = mp_get(data, "status");
    if (mp_str_eq(st, success))
        return false;
    fputs("Erro: ", stdout);
    /* login/channel carry the text in `description`, publish/message in `message`. */
    const char *p;
    size_t n;
    bool has_text = mp_str(mp_get(data, "description"), &p, &n) && n > 0;
    if (!has_text)
        has_text = mp_str(mp_get(data, "message"), &p, &n) && n > 0;
    if (has_text)
        traduz_erro(stdout, p, n);
    else if (st == NULL)
        fputs("resposta sem status", stdout);
    else
        fputs("(sem descricao)", stdout);
    putchar('\n');
    return true;
}

static void print_list(const msgpack_object *data, const char *key, const char *title)
{
    const msgpack_object *list = mp_get(data, key);
    if (!list || list->type != MSGPACK_OBJECT_ARRAY) {
        if (!report_status(data, "sucesso"))
            printf("Erro: resposta sem a lista '%s'\n", key);
        return;
    }
    printf("%s (%u):\n", title, (unsigned)list->via.array.size);
    for (uint32_t i = 0; i < list->via.array.size; i++) {
        const char *p;
        size_t n;
        fputs("  - ", stdout);
        if (mp_str(&list->via.array.ptr[i], &p, &n))
            mp_print_text(stdout, p, n);
        else
            fputs("(valor invalido)", stdout);
        putchar('\n');
    }
}

static bool need_login(app_t *a)
{
    if (a->rede.user_len > 0)
        return true;
    printf("Erro: faca login primeiro (opcao 1)\n");
    return false;
}

static int do_login(app_t *a)
{
    char *name;
    size_t n;
    int rc = ask_name(a, "Nome de usuario: ", false, &name, &n);
    if (rc != ASK_OK)
        return rc;
    campo_t f[] = { { "user", name, n } };
    resposta_t resp;
    if (!rede_pedido(&a->rede, "login", f, 1, &resp))
        return ASK_OK;
    if (!report_status(resp.data, "sucesso")) {
        if (rede_set_user(&a->rede, name, n) < 0)
            printf("Aviso: falha ao assinar as mensagens privadas\n");
        printf("Login OK: %s\n", a->rede.user);
    }
    resposta_free(&resp);
    return ASK_OK;
}

static int do_list(app_t *a, const char *service, const char *title)
{
    resposta_t resp;
    if (rede_pedido(&a->rede, service, NULL, 0, &resp)) {
        print_list(resp.data, service, title);
        resposta_free(&resp);
    }
    return ASK_OK;
}

static int do_channel(app_t *a)
{
    char *name;
    size_t n;
    int rc = ask_name(a, "Nome do canal: ", false, &name, &n);
    if (rc != ASK_OK)
        return rc;
    campo_t f[] = { { "channel", name, n } };
    resposta_t resp;
    if (rede_pedido(&a->rede, "channel", f, 1, &resp)) {
        if (!report_status(resp.data, "sucesso"))
            printf("Canal cadastrado: %s\n", name);
        resposta_free(&resp);
    }
    return ASK_OK;
}

/* Publish and private message share their shape: a name, then the text. Each step is
 * checked as soon as it can be: the login before anything is asked, the name (and that the
 * channel or recipient exists) before the text is asked for. */
static int do_send(app_t *a, bool priv)
{
    if (!need_login(a))
        return ASK_OK;
    char *target, *msg = a->line2;
    size_t tn, mn;
    int rc = ask_name(a, priv ? "Destinatario: " : "Canal: ", false, &target, &tn);
    if (rc != ASK_OK)
        return rc;
    switch (rede_na_lista(&a->rede, priv ? "users" : "channels", target, tn)) {
    case -1:
        return ASK_OK; /* no list: the reason was shown */
    case 0:
        if (priv)
            printf("Erro: o usuario %s nao existe (ninguem entrou com esse nome)\n", target);
        else
            printf("Erro: o canal %s nao existe (crie-o com [3] Cadastrar canal)\n", target);
        return ASK_OK;
    }
    rc = read_line(a, "Mensagem: ", a->line2, &mn);
    if (rc != ASK_OK || !check_text(msg, mn, false))
        return rc == ASK_EOF ? ASK_EOF : ASK_OK;

    resposta_t resp;
    bool ok;
    if (priv) {
        campo_t f[] = { { "src", a->rede.user, a->rede.user_len }, { "dst", target, tn },
                        { "message", msg, mn } };
        ok = rede_pedido(&a->rede, "message", f, 3, &resp);
    } else {
        campo_t f[] = { { "user", a->rede.user, a->rede.user_len }, { "channel", target, tn },
                        { "message", msg, mn } };
        ok = rede_pedido(&a->rede, "publish", f, 3, &resp);
    }
    if (ok) {
        if (!report_status(resp.data, "OK"))
            printf(priv ? "Mensagem enviada para %s\n" : "Publicado em %s\n", target);
        resposta_free(&resp);
    }
    return ASK_OK;
}

/* After a subscription or an empty history: a channel that does not exist gets a hint. */
static void hint_missing_channel(app_t *a, const char *name, size_t n, const char *what)
{
    if (rede_na_lista(&a->rede, "channels", name, n) == 0)
        printf("Aviso: o canal %s nao existe (ainda); %s. Crie-o com [3] Cadastrar canal.\n",
               name, what);
}

static int do_subscribe(app_t *a)
{
    char *name;
    size_t n;
    int rc = ask_name(a, "Canal para inscrever: ", false, &name, &n);
    if (rc != ASK_OK)
        return rc;
    switch (rede_canal(&a->rede, name, n)) {
    case 1:
        printf("Inscrito no canal %s\n", name);
        hint_missing_channel(a, name, n, "as publicacoes aparecem quando ele existir");
        break;
    case 0: printf("Ja inscrito no canal %s\n", name); break;
    default: printf("Erro: falha ao inscrever no canal %s\n", name); break;
    }
    return ASK_OK;
}

static void print_time(const msgpack_object *item)
{
    double ts;
    if (!mp_number(mp_get(item, "timestamp"), &ts))
        return;
    if (ts > 1e11)
        ts /= 1000.0; /* standard clients may send milliseconds */
    if (ts < 0 || ts > 253402300799.0) /* beyond year 9999: not a real time */
        return;
    time_t t = (time_t)ts;
    struct tm tm;
    char buf[32];
    if (localtime_r(&t, &tm) && strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S ", &tm))
        fputs(buf, stdout);
}

static int do_history(app_t *a)
{
    char *name;
    size_t n;
    int rc = ask_name(a, "Canal (vazio = suas mensagens privadas): ", true, &name, &n);
    if (rc != ASK_OK)
        return rc;
    campo_t f[1];
    if (n > 0) {
        f[0] = (campo_t){ "channel", name, n };
    } else {
        if (!need_login(a))
            return ASK_OK;
        f[0] = (campo_t){ "user", a->rede.user, a->rede.user_len };
    }
    resposta_t resp;
    if (!rede_pedido(&a->rede, "history", f, 1, &resp))
        return ASK_OK;
    const msgpack_object *list = mp_get(resp.data, "messages");
    if (!list || list->type != MSGPACK_OBJECT_ARRAY) {
        if (!report_status(resp.data, "sucesso"))
            printf("Erro: resposta sem 'messages'\n");
        resposta_free(&resp);
        return ASK_OK;
    }
    printf("Historico (%u mensagens):\n", (unsigned)list->via.array.size);
    if (list->via.array.size == 0 && n > 0)
        hint_missing_channel(a, name, n, "por isso nao ha historico");
    for (uint32_t i = 0; i < list->via.array.size; i++) {
        const msgpack_object *it = mp_map(&list->via.array.ptr[i]);
        fputs("  ", stdout);
        if (!it) {
            puts("(item invalido)");
            continue;
        }
        print_time(it);
        if (mp_get(it, "dst")) {
            fputs("[privada] ", stdout);
            mp_print_field(stdout, it, mp_get(it, "src") ? "src" : "user", "?");
            fputs(" -> ", stdout);
            mp_print_field(stdout, it, "dst", "?");
        } else {
            fputs("[canal ", stdout);
            mp_print_field(stdout, it, "channel", "?");
            fputs("] ", stdout);
            mp_print_field(stdout, it, "user", "?");
        }
        fputs(": ", stdout);
        mp_print_field(stdout, it, "message", "");
        putchar('\n');
    }
    resposta_free(&resp);
    return ASK_OK;
}

static void menu(void)
{
    fputs("\n===== BulletInBoard =====\n"
          "[1] Login\n"
          "[2] Listar usuarios\n"
          "[3] Cadastrar canal\n"
          "[4] Listar canais\n"
          "[5] Publicar em canal\n"
          "[6] Mensagem privada\n"
          "[7] Inscrever em canal\n"
          "[8] Historico\n"
          "[0] Sair\n"
          "[?] Mostrar este menu de novo\n",
          stdout);
}

/* SIGTERM (docker stop), SIGINT (Ctrl-C), SIGHUP (terminal closed): leave the current wait
 * and exit normally. Without a handler, a client running as PID 1 in a container would
 * ignore SIGTERM. No SA_RESTART, so the waits see EINTR. */
static void on_stop_signal(int sig)
{
    (void)sig;
    bbd_parar = 1;
}

static void catch_stop_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

static int timeout_from_env(void)
{
    const char *s = getenv("BBD_TIMEOUT_MS");
    if (s && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (*end == '\0' && v > 0 && v <= 600000)
            return (int)v;
        fprintf(stderr, "Aviso: BBD_TIMEOUT_MS invalido, usando 2000\n");
    }
    return 2000;
}

int main(void)
{
    const char *broker = getenv("BROKER");
    const char *proxy = getenv("PROXY");
    if (!broker || !*broker)
        broker = "tcp://localhost:5555";
    if (!proxy || !*proxy)
        proxy = "tcp://localhost:5558";

    static app_t app; /* large input buffers: keep them off the stack */
    catch_stop_signals();
    if (rede_init(&app.rede, broker, proxy, timeout_from_env()) != 0) {
        rede_close(&app.rede);
        return 2;
    }
    entrada_inicio(&app.in, &app.rede);
    printf("BulletInBoard - cliente C (broker %s, proxy %s)\n", broker, proxy);
    menu();

    int rc = ASK_OK;
    while (rc != ASK_EOF && !bbd_parar) {
        char *opt = app.line;
        size_t n;
        rc = read_line(&app, "Opcao: ", app.line, &n);
        if (rc != ASK_OK)
            continue;
        trim(&opt, &n);
        if (n != 1) {
            if (n > 0)
                printf("Opcao invalida (? mostra o menu)\n");
            continue;
        }
        switch (opt[0]) {
        case '1': rc = do_login(&app); break;
        case '2': rc = do_list(&app, "users", "Usuarios"); break;
        case '3': rc = do_channel(&app); break;
        case '4': rc = do_list(&app, "channels", "Canais"); break;
        case '5': rc = do_send(&app, false); break;
        case '6': rc = do_send(&app, true); break;
        case '7': rc = do_subscribe(&app); break;
        case '8': rc = do_history(&app); break;
        case '?': case 'm': case 'M': case 'h': menu(); break;
        case '0': rc = ASK_EOF; break;
        default: printf("Opcao invalida (? mostra o menu)\n"); break;
        }
        fflush(stdout);
    }
    entrada_fim(&app.in);
    printf("Ate logo!\n");
    fflush(stdout);
    rede_close(&app.rede);
    return 0;
}
