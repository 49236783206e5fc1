/* Portuguese for the server's error texts, which the standard leaves in English. */
#ifndef BBD_TRADUCAO_H
#define BBD_TRADUCAO_H

#include <stddef.h>
#include <stdio.h>

/* Writes the Portuguese version of the server's error text p[0..n) (not NUL-terminated);
 * a text it does not know is shown as it came, after "erro do servidor: ". */
void traduz_erro(FILE *f, const char *p, size_t n);

#endif
