#include "traducao.h"

#include "mp.h"

#include <stdbool.h>
#include <string.h>

/* A text that starts with `pre` and, when `suf` is set, goes on with some value X and then
 * `suf` (anything after it is left out) reads `antes` X `depois`. With `palavra`, X is a
 * field name (user, channel...) and is translated too. Order matters: specific first. */
typedef struct {
    const char *pre, *suf, *antes, *depois;
    bool palavra;
} regra_t;

static const regra_t REGRAS[] = {
    { "channel already exists", NULL, "o canal ja existe", NULL, false },
    { "channel '", "' does not exist", "o canal '",
      "' nao existe (crie-o com [3] Cadastrar canal)", false },
    { "user '", "' has not logged in", "o usuario '", "' nao fez login", false },
    { "missing field '", "'", "falta o campo '", "'", false },
    { "field '", "' must be a string", "o campo '", "' deve ser texto", false },
    { "field '", "' must be a map", "o campo '", "' deve ser um mapa", false },
    { "field '", "' must be 1 to 128 characters", "o campo '", "' deve ter de 1 a 128 caracteres",
      false },
    { "field '", "' must be a positive integer", "o campo '", "' deve ser um inteiro positivo",
      false },
    { "field '", "' must be", "o campo '", "' tem um valor invalido", false },
    { "message is empty", NULL, "mensagem vazia", NULL, false },
    { "message is longer than", NULL, "mensagem longa demais (maximo 65536 caracteres)", NULL,
      false },
    { "", " name is empty", "nome de ", " vazio", true },
    { "", " name is longer than", "nome de ", " longo demais (maximo 64 caracteres)", true },
    { "", " name has leading or trailing blanks", "nome de ",
      " com espacos no inicio ou no fim", true },
    { "", " name contains control characters", "nome de ", " com caracteres de controle", true },
    { "'", "' is a reserved name", "'", "' e um nome reservado", false },
    { "internal error", NULL, "erro interno no servidor; o pedido nao foi aplicado", NULL, false },
    { "unknown service '", "'", "servico desconhecido '", "'", false },
    { "history needs", NULL, "o historico precisa de um canal ou de um usuario", NULL, false },
    { "unknown operation id", NULL, "id desconhecido em 'before'", NULL, false },
    { "text is not valid UTF-8", NULL, "texto nao e UTF-8 valido", NULL, false },
    { "empty frame", NULL, "pedido vazio", NULL, false },
    { "frame is", NULL, "pedido ilegivel para o servidor", NULL, false },
    { "expected a map", NULL, "pedido mal formado (esperava 'service' e 'data')", NULL, false },
    { "every key in 'data'", NULL, "toda chave de 'data' deve ser texto", NULL, false },
};

static const struct { const char *en, *pt; } PALAVRAS[] = {
    { "user", "usuario" }, { "channel", "canal" }, { "src", "remetente" },
    { "dst", "destinatario" }, { "server", "servidor" },
};

static const char *find(const char *p, size_t n, const char *s)
{
    size_t k = strlen(s);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(p + i, s, k) == 0)
            return p + i;
    return NULL;
}

static void palavra(FILE *f, const char *p, size_t n)
{
    for (size_t i = 0; i < sizeof PALAVRAS / sizeof *PALAVRAS; i++)
        if (strlen(PALAVRAS[i].en) == n && memcmp(PALAVRAS[i].en, p, n) == 0) {
            fputs(PALAVRAS[i].pt, f);
            return;
        }
    mp_print_text(f, p, n);
}

void traduz_erro(FILE *f, const char *p, size_t n)
{
    for (size_t i = 0; i < sizeof REGRAS / sizeof *REGRAS; i++) {
        const regra_t *r = &REGRAS[i];
        size_t k = strlen(r->pre);
        if (n < k || memcmp(p, r->pre, k) != 0)
            continue;
        if (!r->suf) {
            fputs(r->antes, f);
            return;
        }
        const char *end = find(p + k, n - k, r->suf);
        if (!end || end == p + k)
            continue;
        fputs(r->antes, f);
        if (r->palavra)
            palavra(f, p + k, (size_t)(end - (p + k)));
        else
            mp_print_text(f, p + k, (size_t)(end - (p + k)));
        fputs(r->depois, f);
        return;
    }
    fputs("erro do servidor: ", f);
    mp_print_text(f, p, n);
}
