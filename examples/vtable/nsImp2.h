#ifndef NSIMP2_H
#define NSIMP2_H
#include "nsIBase.h"

/* Version 2: the same interface, a data block that gained `b`. */
class nsImp2 : public nsIBase {
public:
    nsImp2();
    virtual void Hello();
    virtual void Foo();

    /* The converters hotagent runs on each old object's first call (and back on rollback). */
    static void upgrade(void *object);
    static void downgrade(void *object);

protected:
    struct data_t {
        int a;
        int b;
    };
    data_t *m_data;
};

#endif
