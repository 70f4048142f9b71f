/* hotagent patch-author API (placeholder until the documented header lands). */
#ifndef HOTAGENT_H
#define HOTAGENT_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif
struct hotagent_ctx;
int  hotagent_prepare(struct hotagent_ctx *ctx);
int  hotagent_migrate(struct hotagent_ctx *ctx);
int  hotagent_unmigrate(struct hotagent_ctx *ctx);
void hotagent_committed(struct hotagent_ctx *ctx);
int   hotagent_fail(struct hotagent_ctx *ctx, const char *message);
void *hotagent_previous_symbol(struct hotagent_ctx *ctx, const char *name);
int   hotagent_convert_class(struct hotagent_ctx *ctx, const char *old_vtable, const char *new_vtable,
                             void (*upgrade)(void *object), void (*downgrade)(void *object));
void *hotagent_shadow_get(const void *object, unsigned long id);
void *hotagent_shadow_get_or_alloc(const void *object, unsigned long id, size_t size);
void  hotagent_shadow_free(const void *object, unsigned long id);
void  hotagent_shadow_free_all(unsigned long id);
#ifdef __cplusplus
}
#endif
#endif
