/* The interface: an abstract base class. Its vtable layout (Hello, then Foo) is the contract
 * every version of the implementation keeps. */
#ifndef NSIBASE_H
#define NSIBASE_H

class nsIBase {
public:
    virtual void Hello() = 0;
    virtual void Foo() = 0;
};

/* The module's factory: callers never see the concrete class. */
extern "C" nsIBase *create();

#endif
