// The Slurm test fixture: a real single-node Slurm cluster on 127.0.0.1 in a temporary directory,
// with the sshd fixture as its login node. Debian 12's munged, slurmctld and slurmd (22.05) run as
// the current user (root in CI) with a generated munge key, their own munge socket, a generated
// slurm.conf/gres.conf, free ports and every state file inside the directory. The node offers one
// partition ("cpu", default) with the machine's real CPU count and `gpu:tiny:2`, two fake GPUs (see
// docs/providers.md, "Slurm", for why a gpu GRES needs device files). The constructor returns once
// `sinfo` shows the node idle; if Slurm cannot start it throws with the daemons' logs, so the test
// fails: nothing is ever skipped. Teardown cancels every job, stops the daemons and kills anything
// left that carries this cluster's SLURM_CONF (slurmstepd re-parents itself to init).
//
// SSH sessions on the login node find the cluster through sshd's `SetEnv SLURM_CONF=...`, the same
// place a site's login environment would set it; product code never learns it is a test.
//
//   tests::SlurmFixture slurm;
//   auto r = tests::ssh_exec(slurm.login(), "sinfo -h -o %t");   // "idle\n"
//   slurm.run({"scontrol", "requeue", "12"});                        // admin commands, locally
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/subprocess.h"
#include "tests/support/sshd_fixture.h"
#include "tests/support/temp_dir.h"

namespace tests {

class SlurmFixture {
public:
    SlurmFixture();
    ~SlurmFixture();
    SlurmFixture(const SlurmFixture &) = delete;
    SlurmFixture & operator=(const SlurmFixture &) = delete;

    SshdFixture & login() { return *sshd_; }
    const std::string & conf_path() const { return conf_; }
    const std::string & cluster_name() const { return cluster_; }
    const std::string & partition() const { return partition_; }
    const std::string & node() const { return node_; }
    std::string shared_dir() const { return dir_.path() + "/shared"; }  // the "shared" work directory
    int cpus() const { return cpus_; }
    int gpus() const { return 2; }
    static constexpr const char * kGpuType = "tiny";

    // Runs a Slurm client command here, as the administrator, against this cluster (SLURM_CONF set).
    common::ProcessResult run(const std::vector<std::string> & argv) const;
    // A writable broker config (mode 0600) whose `slurm:` section describes this cluster; `extra`
    // is appended inside the cluster's mapping (two-space indented keys such as "  qos: x\n").
    std::string write_broker_config(const std::string & path, const std::string & extra = "") const;
    // The daemons' logs, for failure messages.
    std::string logs() const;

private:
    void start_munge();
    void start_slurm();
    void wait_idle();
    void cancel_all_jobs();
    void kill_leftovers();

    TempDir dir_;
    std::string cluster_ = "tktest";
    std::string partition_ = "cpu";
    std::string node_ = "localhost";
    std::string conf_;
    std::string munge_socket_;
    int cpus_ = 1;
    common::ChildProcess munged_;
    common::ChildProcess slurmctld_;
    common::ChildProcess slurmd_;
    std::unique_ptr<SshdFixture> sshd_;
};

}  // namespace tests
