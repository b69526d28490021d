/* Subcommands of the xray-dp binary. Each takes argv with argv[0] = the subcommand name and returns the
 * process exit status: 0 ok, 2 bad usage, 1 any other error (one line on stderr). */
#ifndef XD_CLI_H
#define XD_CLI_H

int cmd_pack(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_audit(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_export(int argc, char **argv);

#endif
