#include "mp.h"

#include <math.h>
#include <string.h>

const msgpack_object *mp_map(const msgpack_object *o)
{
    return (o && o->type == MSGPACK_OBJECT_MAP) ? o : NULL;
}

const msgpack_object *mp_get(const msgpack_object *map, const char *key)
{
    if (!mp_map(map))
        return NULL;
    size_t klen = strlen(key);
    const msgpack_object_map *m = &map->via.map;
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
            memcmp(k->via.str.ptr, key, klen) == 0)
            return &m->ptr[i].val;
    }
    return NULL;
}

bool mp_str(const msgpack_object *o, const char **p, size_t *n)
{
    if (!o || o->type != MSGPACK_OBJECT_STR)
        return false;
    *p = o->via.str.ptr;
    *n = o->via.str.size;
    return true;
}

bool mp_str_eq(const msgpack_object *o, const char *s)
{
    const char *p;
    size_t n;
    return mp_str(o, &p, &n) && n == strlen(s) && memcmp(p, s, n) == 0;
}

bool mp_uint(const msgpack_object *o, uint64_t *out)
{
    if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return false;
    *out = o->via.u64;
    return true;
}

bool mp_number(const msgpack_object *o, double *out)
{
    if (!o)
        return false;
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)o->via.u64; return true;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)o->via.i64; return true;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: *out = o->via.f64; return isfinite(*out);
    default: return false;
    }
}

void mp_print_text(FILE *f, const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c < 0x20 || c == 0x7f) {
            fputc('?', f);
        } else if (c == 0xc2 && i + 1 < n && s[i + 1] >= 0x80 && s[i + 1] <= 0x9f) {
            fputc('?', f); /* UTF-8 encoded C1 control (e.g. CSI) */
            i++;
        } else {
            fputc(c, f);
        }
    }
}

void mp_print_field(FILE *f, const msgpack_object *map, const char *key, const char *fallback)
{
    const char *p;
    size_t n;
    if (mp_str(mp_get(map, key), &p, &n))
        mp_print_text(f, p, n);
    else
        fputs(fallback, f);
}

int mp_pack_str(msgpack_packer *pk, const char *p, size_t n)
{
    if (n > UINT32_MAX)
        return -1;
    if (msgpack_pack_str(pk, n) != 0)
        return -1;
    return msgpack_pack_str_body(pk, p, n);
}

int mp_pack_cstr(msgpack_packer *pk, const char *s)
{
    return mp_pack_str(pk, s, strlen(s));
}

/* Structural pre-scan of one msgpack value. msgpack-c allocates an array's element slots
 * from the header's count before reading them, so a 5-byte "array of 4 billion" would ask
 * for 64 GiB. Every element takes at least one byte, so a count larger than the bytes left
 * is malformed and is rejected here. Iterative (a count of pending values) so nesting depth
 * cannot exhaust the C stack. */
static bool mp_plausible(const unsigned char *b, size_t n)
{
    size_t pos = 0;
    uint64_t pending = 1;
    while (pending > 0) {
        if (pos >= n)
            return false;
        pending--;
        unsigned char t = b[pos++];
        uint64_t skip = 0, items = 0;
        size_t hdr = 0;

        if (t <= 0x7f || t >= 0xe0 || (t >= 0xc0 && t <= 0xc3)) {
            /* fixint, negative fixint, nil, (unused), false, true */
        } else if (t >= 0x80 && t <= 0x8f) {
            items = 2u * (t & 0x0f);
        } else if (t >= 0x90 && t <= 0x9f) {
            items = t & 0x0f;
        } else if (t >= 0xa0 && t <= 0xbf) {
            skip = t & 0x1f;
        } else {
            switch (t) {
            case 0xc4: case 0xc7: case 0xd9: hdr = 1; break; /* bin8, ext8, str8 */
            case 0xc5: case 0xc8: case 0xda: case 0xdc: case 0xde: hdr = 2; break;
            case 0xc6: case 0xc9: case 0xdb: case 0xdd: case 0xdf: hdr = 4; break;
            case 0xca: skip = 4; break;
            case 0xcb: skip = 8; break;
            case 0xcc: case 0xd0: skip = 1; break;
            case 0xcd: case 0xd1: skip = 2; break;
            case 0xce: case 0xd2: skip = 4; break;
            case 0xcf: case 0xd3: skip = 8; break;
            case 0xd4: skip = 2; break;  /* fixext1: type + 1 */
            case 0xd5: skip = 3; break;
            case 0xd6: skip = 5; break;
            case 0xd7: skip = 9; break;
            case 0xd8: skip = 17; break;
            default: return false;
            }
            if (hdr) {
                if (n - pos < hdr)
                    return false;
                uint64_t len = 0;
                for (size_t i = 0; i < hdr; i++)
                    len = (len << 8) | b[pos + i];
                pos += hdr;
                if (t == 0xdc || t == 0xdd)
                    items = len;
                else if (t == 0xde || t == 0xdf)
                    items = 2 * len;
                else if (t >= 0xc7 && t <= 0xc9)
                    skip = len + 1; /* ext: type byte + data */
                else
                    skip = len;
            }
        }
        if (skip > n - pos)
            return false;
        pos += (size_t)skip;
        pending += items;
        if (pending > n - pos)
            return false;
    }
    return true;
}

bool mp_decode(msgpack_unpacked *u, const char *buf, size_t n)
{
    if (!mp_plausible((const unsigned char *)buf, n))
        return false;
    size_t off = 0;
    return msgpack_unpack_next(u, buf, n, &off) == MSGPACK_UNPACK_SUCCESS;
}
