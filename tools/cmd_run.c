/* cmd_run.c - TEMPORARY scaffold, replaced by the real command. */
#include <stdio.h>
#include "cli.h"
int cmd_run(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "apr run: not built yet\n");
    return 2;
}
