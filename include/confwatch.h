/*
 * confwatch.h: config_watch, a configuration file that changes is applied
 * as on SIGHUP.  Once a second worker 0 stats the main file, its %include
 * files, auth_file and auth_hba_file/auth_ident_file (by the path given and
 * by the path it resolves to: Kubernetes updates a mounted ConfigMap by
 * swapping the "..data" symlink, which changes neither the name nor the
 * file's own inode seen through the old link).  A change is applied once it
 * has been quiet for one tick (an editor's or kubelet's burst is one reload).
 *
 * Must not: block the loop (a stat per file per second, no read), reload a
 * configuration started from the environment, run on another worker.
 */
#ifndef PGFLEET_CONFWATCH_H
#define PGFLEET_CONFWATCH_H

/* Worker 0, after the loop is set up; nothing when started without a file. */
void confwatch_start(void);
/* Worker 0, before the loop's teardown. */
void confwatch_stop(void);

#endif
