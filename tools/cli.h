/* cli.h - the apr subcommands. Each lives in its own cmd_*.c file and is a
 * thin layer over formats/, libquant/ and libforward/.
 * Exit codes: 0 success (verify: pass), 1 verify failed, 2 error. */
#ifndef APR_CLI_H
#define APR_CLI_H

int cmd_inspect(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_imatrix(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_synth(int argc, char **argv);

/* 0 when everything printed on stdout reached its file (flushed, no write
 * failed: a full disk, a closed pipe); else the error: e when not 0 (the
 * errno of a write that failed already, past stdio's buffer), else the
 * flush's errno, else EIO (an earlier write failed and its errno is gone). */
int apr_stdout_error(int e);

#endif
