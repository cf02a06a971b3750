/* cmd_verify.c - TEMPORARY scaffold, replaced by the real command. */
#include <stdio.h>
#include "cli.h"
int cmd_verify(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "apr verify: not built yet\n");
    return 2;
}
