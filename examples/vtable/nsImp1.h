#ifndef NSIMP1_H
#define NSIMP1_H
#include "nsIBase.h"

/* Version 1: its data lives behind one pointer, so a later version can grow it. */
class nsImp1 : public nsIBase {
public:
    nsImp1();
    virtual void Hello();
    virtual void Foo();

protected:
    struct data_t {
        int a;
    };
    data_t *m_data;
};

#endif
