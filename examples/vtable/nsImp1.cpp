/* libimp.so version 1. */
#include "nsImp1.h"
#include <cstdio>

nsImp1::nsImp1() : m_data(new data_t) { m_data->a = 2008; }

void nsImp1::Hello() { printf("obj(%p), version1, Hello(), m_data->a = %d\n", (void *)this, m_data->a); }

void nsImp1::Foo() { printf("obj(%p), version1, Foo(), m_data->a = %d\n", (void *)this, m_data->a); }

extern "C" nsIBase *create() { return new nsImp1; }
