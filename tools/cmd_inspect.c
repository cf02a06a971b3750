/* cmd_inspect.c - TEMPORARY scaffold, replaced by the real command. */
#include <stdio.h>
#include "cli.h"
int cmd_inspect(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "apr inspect: not built yet\n");
    return 2;
}
