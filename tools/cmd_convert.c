/* cmd_convert.c - TEMPORARY scaffold, replaced by the real command. */
#include <stdio.h>
#include "cli.h"
int cmd_convert(int argc, char **argv)
{
    (void)argc; (void)argv;
    fprintf(stderr, "apr convert: not built yet\n");
    return 2;
}
