/* libimp.so version 2 (same soname): the reload's replacement for version 1. */
#include "nsImp2.h"
#include <hotagent.h>
#include <cstdio>

nsImp2::nsImp2() : m_data(new data_t) {
    m_data->a = 2008;
    m_data->b = 77;
}

void nsImp2::Hello() {
    printf("obj(%p) version 2, Hello(), m_data->a = %d, m_data->b:%d\n", (void *)this, m_data->a,
           m_data->b);
}

void nsImp2::Foo() {
    printf("obj(%p) version 2, Foo(), m_data->a:%d, m_data->b:%d\n", (void *)this, m_data->a,
           m_data->b);
}

extern "C" nsIBase *create() { return new nsImp2; }

/* An nsImp1 object as version 1 laid it out: the vptr, then its data pointer. The agent sets the
 * vptr; the converters only rebuild the data block. */
namespace {
struct v1_data {
    int a;
};
struct v1_object {
    void *vptr;
    v1_data *m_data;
};
} // namespace

void nsImp2::upgrade(void *object) {
    v1_object *old = static_cast<v1_object *>(object);
    printf("convert object(%p) from version 1 to 2\n", object);
    data_t *d = new data_t;
    d->a = old->m_data->a;
    d->b = 77;
    delete old->m_data;
    reinterpret_cast<nsImp2 *>(object)->m_data = d;
}

void nsImp2::downgrade(void *object) {
    nsImp2 *self = reinterpret_cast<nsImp2 *>(object);
    printf("convert object(%p) from version 2 to 1\n", object);
    v1_data *d = new v1_data;
    d->a = self->m_data->a;
    delete self->m_data;
    reinterpret_cast<v1_object *>(object)->m_data = d;
}

/* Called by hotagent once this library is loaded, before anything is switched. */
extern "C" int hotagent_prepare(struct hotagent_ctx *ctx) {
    return hotagent_convert_class(ctx, "_ZTV6nsImp1", "_ZTV6nsImp2", nsImp2::upgrade,
                                  nsImp2::downgrade);
}
