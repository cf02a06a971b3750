/* cmd_quantize.c - TEMPORARY scaffold, replaced by the real command. */
#include <stdio.h>
#include "cli.h"
int cmd_quantize(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "apr quantize: not built yet\n");
    return 2;
}
