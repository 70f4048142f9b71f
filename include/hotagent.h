/* hotagent.h: the patch-author API of hotagent (issue 10).
 *
 * A patch library (a new build of a library the target already runs) includes this header and is
 * built as usual (`gcc -shared -fPIC ...`, nothing extra to link): the services below are
 * exported by the agent, libhotagent.so, which the target preloads, and the loader resolves them
 * when `hotctl reload` loads the patch. The hooks are optional: export the ones you need.
 *
 * The names and signatures are a contract: the agent looks the hooks up by these names, and the
 * prototypes below make a hook with the wrong signature a compile error. */
#ifndef HOTAGENT_H
#define HOTAGENT_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Opaque: only the agent creates one and hands it to the hooks of one reload or rollback. It is
 * valid for the duration of the hook call only. */
struct hotagent_ctx;

/* ---- Hooks a patch library may export (all optional) ------------------------------------------
 *
 * Return 0 to go on; anything else refuses the reload (or rollback), which then changes nothing:
 * give the reason with `return hotagent_fail(ctx, "why");`, and hotctl prints it. */

/* Runs once the patch is loaded, before anything is switched, with every thread running: check
 * what the new code needs, register class converters (hotagent_convert_class). May do anything
 * (allocate, lock, log). Nonzero vetoes the reload. */
int hotagent_prepare(struct hotagent_ctx *ctx);

/* Runs with every other thread of the process parked, just before calls switch to this library:
 * copy state from the previous generation (hotagent_previous_symbol) into this one's.
 * Like a signal handler, it must not call malloc/free (or anything that may), nor take any lock
 * another thread may hold: a parked thread may hold it, and the process would hang. Nonzero
 * refuses the reload; nothing was switched. */
int hotagent_migrate(struct hotagent_ctx *ctx);

/* Runs when this generation is rolled back, with every other thread parked, before calls go back
 * to the previous generation: hand state back (hotagent_previous_symbol names the previous
 * generation's objects). Same rules as hotagent_migrate: no malloc, no locks. Nonzero refuses the
 * rollback; this generation stays. */
int hotagent_unmigrate(struct hotagent_ctx *ctx);

/* Runs after the switch to this library, with the threads running again. May do anything; it
 * cannot refuse any more (the reload is done). */
void hotagent_committed(struct hotagent_ctx *ctx);

/* ---- Services the agent exports --------------------------------------------------------------- */

/* Records why the current hook refuses (the first message of a hook call is kept, later ones are
 * ignored) and returns -1, so `return hotagent_fail(ctx, "why");` vetoes. A NULL or unknown ctx
 * records nothing (and still returns -1). Safe in every hook. */
int hotagent_fail(struct hotagent_ctx *ctx, const char *message);

/* The address of NAME (a function or an object, exported or private: .symtab or separate debug
 * info) in the generation this library replaces: in hotagent_migrate the state to take over, in
 * hotagent_unmigrate where to hand it back. NULL when there is no such symbol. Never allocates:
 * safe in hotagent_migrate and hotagent_unmigrate. */
void *hotagent_previous_symbol(struct hotagent_ctx *ctx, const char *name);

/* Only during hotagent_prepare: from the switch on, every object whose vptr is OLD_VTABLE (a
 * vtable symbol of the replaced generation, e.g. "_ZTV5nsImp") is converted once, before any
 * method runs on it, by upgrade(object), after which its vptr is NEW_VTABLE (a vtable symbol of
 * this library). A rollback converts objects back with downgrade (NULL: a rollback is refused
 * while such objects may exist). Returns 0, or -1 with the reason recorded as by hotagent_fail
 * (no such vtable, method counts differ, not during prepare). */
int hotagent_convert_class(struct hotagent_ctx *ctx, const char *old_vtable, const char *new_vtable,
                           void (*upgrade)(void *object), void (*downgrade)(void *object));

/* ---- Shadow variables: extra fields attached to any object by its address ---------------------
 *
 * A block is keyed by (object address, id); pick an id per field (e.g. a constant of your patch).
 * Thread-safe, usable from any thread and any code of the patch; not from hotagent_migrate,
 * hotagent_unmigrate or a signal handler: they allocate and lock (a shard's lock, never a global one). Blocks are 16-byte aligned and never move while
 * allocated; the agent does not know when an object dies: free its blocks when you free it. */

/* The block of (object, id), or NULL when there is none. */
void *hotagent_shadow_get(const void *object, unsigned long id);

/* The block of (object, id); the first call makes it: SIZE bytes, zeroed (later calls return the
 * same block whatever their size). NULL only when SIZE is 0 or memory is exhausted. Two threads
 * asking at once get the same block. */
void *hotagent_shadow_get_or_alloc(const void *object, unsigned long id, size_t size);

/* Frees the block of (object, id); no-op when there is none. The next get returns NULL, the next
 * get_or_alloc a fresh zeroed block. */
void hotagent_shadow_free(const void *object, unsigned long id);

/* Frees the block of every object for this id (e.g. in hotagent_committed of a patch that drops
 * the field, or before unloading). */
void hotagent_shadow_free_all(unsigned long id);

#ifdef __cplusplus
}
#endif

#endif /* HOTAGENT_H */
