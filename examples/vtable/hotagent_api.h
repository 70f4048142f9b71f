/* The part of the patch-author API (include/hotagent.h, issue 10) this example uses. The header
 * is used when it is on the include path; until then these declarations stand in for it. */
#ifndef EXAMPLE_HOTAGENT_API_H
#define EXAMPLE_HOTAGENT_API_H

#if defined(__has_include) && __has_include(<hotagent.h>)
#include <hotagent.h>
#else
#ifdef __cplusplus
extern "C" {
#endif
struct hotagent_ctx;
int hotagent_fail(struct hotagent_ctx *ctx, const char *message);
int hotagent_convert_class(struct hotagent_ctx *ctx, const char *old_vtable, const char *new_vtable,
                           void (*upgrade)(void *object), void (*downgrade)(void *object));
#ifdef __cplusplus
}
#endif
#endif

#endif
