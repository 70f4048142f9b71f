/* The seed's test program: two objects made by version 1, a reload to version 2 while they live,
 * then (going further) an object made by version 2 and a rollback that converts them all back.
 * It waits for each switch on stdin, after printing "swap point: reload" / "swap point: rollback". */
#include "nsIBase.h"
#include <cstdio>
#include <cstring>

static void swap_point(const char *what) {
    printf("swap point: %s\n", what);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) {
        printf("stdin closed at the swap point\n");
    }
}

int main() {
    setvbuf(stdout, nullptr, _IOLBF, 0);
    nsIBase *o1 = create(); // version 1 objects
    nsIBase *o2 = create();
    printf("create objects of version 1: %p, %p\n", (void *)o1, (void *)o2);
    o1->Hello(); // the version 1 code
    o2->Foo();

    swap_point("reload");

    o1->Hello(); // converted first, then the version 2 code
    o2->Foo();
    o1->Hello(); // the version 2 code straight away
    o2->Hello();
    o1->Foo();
    o2->Foo();

    nsIBase *o3 = create(); // made by version 2: never converted
    printf("create an object of version 2: %p\n", (void *)o3);
    o3->Hello();
    o3->Foo();

    swap_point("rollback");

    o1->Hello(); // converted back, then the version 1 code
    o2->Foo();
    o3->Hello(); // born new, goes back too
    o1->Foo();
    o2->Hello();
    o3->Foo();
    printf("done\n");
    return 0;
}
