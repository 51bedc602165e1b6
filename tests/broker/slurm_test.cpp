// The slurm provider against a real single-node Slurm (tests/support/slurm_fixture.h): the fixture
// itself, search from sinfo, create/list/terminate through the `broker` program with the job proven
// gone by squeue, hostile values that stay values on the login node's shell, hostile command output,
// and cluster definitions refused before anything is submitted.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "broker/broker.h"
#include "broker/providers/providers.h"
#include "common/config_yaml.h"
#include "common/error.h"
#include "common/sshd_server.h"
#include "common/subprocess.h"
#include "tests/support/slurm_fixture.h"
#include "tests/support/temp_dir.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

using namespace broker;

namespace {

common::ProcessResult broker_cli(const std::string & config, const tests::TempDir & dir, std::vector<std::string> args) {
    args.insert(args.begin(), BROKER_BIN);
    common::RunOptions o;
    o.extra_env = {"BROKER_CONFIG=" + config, "BROKER_STATE_DIR=" + dir / "state", "BROKER_LEDGER=" + dir / "ledger.sqlite",
                   "BROKER_POLL_INTERVAL=200ms", "BROKER_SSH_KEY=" + dir / "nokey", "SLURM_CONF=/nonexistent"};
    o.timeout = std::chrono::seconds(120);
    return common::run_process(args, o);
}

// Jobs the cluster knows (any state), as "<id> <state> <name>" lines, read by the administrator.
std::string all_jobs(const tests::SlurmFixture & slurm) {
    return slurm.run({"squeue", "--noheader", "--states=all", "--format=%i %T %j"}).out;
}

SlurmCluster cluster_from(const std::string & yaml) {
    auto root = common::ConfigNode::load_string(yaml, "broker.yaml");
    auto clusters = parse_slurm_clusters(root.at("slurm"));
    REQUIRE(clusters.size() == 1);
    return clusters[0];
}

const char * kClusterYaml =
    "slurm:\n"
    "  clusters:\n"
    "    - name: lab\n"
    "      login: alice@login.example:2222\n"
    "      key: /keys/id\n"
    "      work_dir: /shared/alice\n"
    "      partitions:\n"
    "        - name: gpu\n"
    "          gpu_types:\n"
    "            - type: a100\n"
    "              model: A100 SXM4 80GB\n"
    "              vram_gb: 80\n"
    "        - name: cpu\n";

std::string config_error(const std::string & yaml) {
    try {
        auto root = common::ConfigNode::load_string(yaml, "broker.yaml");
        parse_slurm_clusters(root.at("slurm"));
    } catch (const common::Error & e) {
        CHECK(e.kind() == common::ErrorKind::Usage);
        return e.message();
    }
    return "(accepted)";
}

// The example cluster with `jump` lines inserted after its key.
std::string with_jump(const std::string & jump) {
    std::string y = kClusterYaml;
    const std::string key = "      key: /keys/id\n";
    return y.replace(y.find(key), key.size(), key + jump);
}

// Broker options for the cluster: its broker config (`extra` inside the cluster's mapping) and a
// state folder under `dir`.
BrokerOptions broker_options(const tests::SlurmFixture & slurm, const tests::TempDir & dir, const std::string & extra = "") {
    BrokerOptions bo;
    bo.config_path = slurm.write_broker_config(dir / "broker.yaml", extra);
    bo.state_dir = dir / "state";
    return bo;
}

// The cluster's one-GPU offer, from a fresh search.
Offer one_gpu_offer(Broker & b) {
    OfferFilter f;
    f.providers = {"slurm"};
    f.gpu_count = 1;
    auto offers = b.search(f, SortKey::Price, 0).offers;
    REQUIRE(offers.size() == 1);
    return offers[0];
}

// Submits one of our jobs with one GPU through the provider (the offer from a fresh search).
Instance create_job(Broker & b, const std::string & run, long long lifetime_s,
                    std::vector<std::pair<std::string, std::string>> env = {}) {
    CreateRequest r;
    r.offer = one_gpu_offer(b);
    r.deadline_unix = static_cast<long long>(common::real_clock().unix_now()) + lifetime_s;
    r.name = "tk-" + run + "-main-dl" + std::to_string(r.deadline_unix);
    r.env = std::move(env);
    return b.provider("slurm").create(r);
}

}  // namespace

TEST_CASE("slurm fixture: the node is idle with its fake GPUs, and the login node's SSH sessions reach the cluster") {
    tests::SlurmFixture slurm;
    auto info = tests::ssh_exec(slurm.login(), "sinfo --noheader --Node --format='%P %t %G'");
    INFO(info.err, slurm.logs());
    CHECK(info.exit_code == 0);
    CHECK(info.out == "cpu* idle gpu:tiny:2\n");
    // A job with a GPU runs on the node and sees Slurm's device assignment.
    auto sub = tests::ssh_exec(slurm.login(), "cd " + slurm.shared_dir() +
                                                  " && sbatch --parsable --wait --gres=gpu:1 --output=fx.out "
                                                  "--wrap='echo gpus=$CUDA_VISIBLE_DEVICES'");
    INFO(sub.err);
    CHECK(sub.exit_code == 0);
    CHECK(common::read_text_file(slurm.shared_dir() + "/fx.out") == "gpus=0\n");
}

TEST_CASE("slurm config: a full cluster definition is read with its defaults") {
    auto c = cluster_from(kClusterYaml);
    CHECK(c.name == "lab");
    CHECK(c.login.user == "alice");
    CHECK(c.login.host == "login.example");
    CHECK(c.login.port == 2222);
    CHECK(c.login.key_path == "/keys/id");
    CHECK(c.default_time_s == 3600);
    REQUIRE(c.partitions.size() == 2);
    CHECK(c.partitions[0].gres == "gpu");
    CHECK(c.partitions[0].gpu_types[0].vram_gb == 80);
    tests::EnvGuard home("HOME", std::string("/home/alice"));
    std::string tilde = kClusterYaml;
    tilde.replace(tilde.find("/keys/id"), 8, "~/.ssh/id");
    CHECK(cluster_from(tilde).login.key_path == "/home/alice/.ssh/id");
}

TEST_CASE("slurm config: bad cluster definitions are usage errors naming the file, line and key") {
    const std::string base = kClusterYaml;
    auto with = [&](const std::string & from, const std::string & to) {
        std::string y = base;
        auto at = y.find(from);
        REQUIRE(at != std::string::npos);
        return y.replace(at, from.size(), to);
    };
    CHECK(config_error(with("login: alice@login.example:2222", "login: login.example")).find("broker.yaml:4:") != std::string::npos);
    CHECK(config_error(with("login: alice@login.example:2222", "login: a@h:99999")).find("slurm.clusters[0].login") != std::string::npos);
    CHECK(config_error(with("work_dir: /shared/alice", "work_dir: shared")).find("must be an absolute path") != std::string::npos);
    CHECK(config_error(with("name: lab", "name: Lab One")).find("slurm.clusters[0].name") != std::string::npos);
    CHECK(config_error(with("      partitions:\n", "      default_time: 10s\n      partitions:\n")).find("default_time") != std::string::npos);
    CHECK(config_error(with("      partitions:\n", "      qos: \"\"\n      partitions:\n")).find("qos") != std::string::npos);
    CHECK(config_error(with("      partitions:\n", "      acount: x\n      partitions:\n")).find("did you mean 'account'") != std::string::npos);
    CHECK(config_error(with("        - name: cpu\n", "        - name: \"a,b\"\n")).find("partition name") != std::string::npos);
    CHECK(config_error(with("              vram_gb: 80\n", "              vram_gb: -1\n")).find("vram_gb") != std::string::npos);
    std::string twice = base + "    - name: lab\n      login: a@b\n      key: k\n      work_dir: /w\n      partitions: [{name: p}]\n";
    CHECK(config_error(twice).find("defined twice") != std::string::npos);
    CHECK(config_error("slurm:\n  clusters:\n    - name: x\n      login: a@b\n      key: k\n      work_dir: /w\n      partitions: []\n")
              .find("at least one partition") != std::string::npos);
}

TEST_CASE("slurm config: jump hosts are read first to last, with the cluster's key unless a hop names its own") {
    CHECK(cluster_from(kClusterYaml).login.jump.empty());
    auto c = cluster_from(with_jump("      jump: [bob@bastion.example, \"carol@10.0.0.9:2200\"]\n"));
    REQUIRE(c.login.jump.size() == 2);
    CHECK(c.login.jump[0].user == "bob");
    CHECK(c.login.jump[0].host == "bastion.example");
    CHECK(c.login.jump[0].port == 22);
    CHECK(c.login.jump[0].key_path == "/keys/id");
    CHECK(c.login.jump[1].user == "carol");
    CHECK(c.login.jump[1].host == "10.0.0.9");
    CHECK(c.login.jump[1].port == 2200);
    CHECK(c.login.host == "login.example");  // the login node itself is unchanged
    tests::EnvGuard home("HOME", std::string("/home/alice"));
    c = cluster_from(with_jump("      jump:\n"
                               "        - login: bob@bastion.example:2022\n"
                               "          key: ~/.ssh/bastion\n"
                               "        - {login: \"dave@inner\"}\n"));
    REQUIRE(c.login.jump.size() == 2);
    CHECK(c.login.jump[0].port == 2022);
    CHECK(c.login.jump[0].key_path == "/home/alice/.ssh/bastion");
    CHECK(c.login.jump[1].user == "dave");
    CHECK(c.login.jump[1].key_path == "/keys/id");
    CHECK(c.login.jump[1].host == "inner");
}

TEST_CASE("slurm config: bad jump hosts are usage errors naming the file, line and key") {
    auto no_user = config_error(with_jump("      jump: [bastion.example]\n"));
    CHECK(no_user.find("broker.yaml:6:") != std::string::npos);
    CHECK(no_user.find("slurm.clusters[0].jump[0]") != std::string::npos);
    CHECK(no_user.find("expected user@host[:port]") != std::string::npos);
    CHECK(config_error(with_jump("      jump: [a@b:0]\n")).find("port") != std::string::npos);
    CHECK(config_error(with_jump("      jump: bob@bastion\n")).find("a list of jump hosts") != std::string::npos);
    CHECK(config_error(with_jump("      jump: []\n")).find("at least one jump host") != std::string::npos);
    auto five = config_error(with_jump("      jump: [a@h1, a@h2, a@h3, a@h4, a@h5]\n"));
    CHECK(five.find("5 jump hosts; at most 4") != std::string::npos);
    CHECK(five.find("broker.yaml:6:") != std::string::npos);
    CHECK(config_error(with_jump("      jump: [{login: a@b, kye: /k}]\n")).find("did you mean 'key'") != std::string::npos);
    CHECK(config_error(with_jump("      jump: [{key: /k}]\n")).find("login") != std::string::npos);
    CHECK(config_error(with_jump("      jump: [{login: a@b, key: \"\"}]\n")).find("private key") != std::string::npos);
    CHECK(config_error(with_jump("      jump: [[a@b]]\n")).find("expected user@host[:port]") != std::string::npos);
    CHECK(config_error(with_jump("      jump: [\"a b@c\"]\n")).find("space") != std::string::npos);
}

TEST_CASE("slurm wire: sinfo rows become per-partition GPU shapes with idle counts, hostile rows are refused") {
    auto c = cluster_from(kClusterYaml);
    c.price_usd_per_gpu_hour = 0.5;
    // Two GPU nodes (one with 1 of 4 in use, one drained) and two CPU nodes (one idle).
    const std::string out =
        "gpu|mixed|gpu:a100:4(S:0-1)|gpu:a100:1(IDX:0)|64|515000|g1\n"
        "gpu|drained|gpu:a100:4|gpu:a100:0(IDX:N/A)|64|515000|g2\n"
        "cpu*|idle|(null)|gpu:0|32|128000|c1\n"
        "cpu*|allocated|(null)|gpu:0|32|128000|c2\n"
        "other|idle|gpu:h100:8|gpu:h100:0|1|1|x\n";
    auto offers = providers::slurm_parse_sinfo(c, out);
    REQUIRE(offers.size() == 5);  // a100 x1..x4 on gpu, one cpu row; "other" is not configured
    CHECK(offers[0].offer_id == "lab/gpu/a100/1");
    CHECK(offers[0].gpu_model == "A100 SXM4 80GB");
    CHECK(offers[0].vram_gb_per_gpu == 80);
    CHECK(offers[0].availability == "1 nodes free, 3/8 GPUs idle");
    CHECK(offers[3].offer_id == "lab/gpu/a100/4");
    CHECK(offers[3].availability == "0 nodes free, 3/8 GPUs idle");
    CHECK(offers[3].price_usd_per_hour_total == doctest::Approx(2.0));
    CHECK(offers[4].offer_id == "lab/cpu/none/0");
    CHECK(offers[4].gpu_count == 0);
    CHECK(offers[4].availability == "1/2 nodes idle");
    CHECK(offers[4].vcpus == 32);

    auto refused = [&](const std::string & text) {
        try {
            providers::slurm_parse_sinfo(c, text);
        } catch (const common::Error & e) {
            CHECK(e.kind() == common::ErrorKind::Network);
            CHECK(e.message().size() < 400);
            return true;
        }
        return false;
    };
    CHECK(refused("gpu|idle|gpu:a100:4\n"));
    CHECK(refused("gpu|idle|gpu:a100:lots|gpu:0|1|1|n\n"));
    CHECK(refused("gpu|idle|gpu:a100:99999|gpu:0|1|1|n\n"));
    CHECK(refused("gpu|idle|gpu:a100:4|gpu:0|-1|1|n\n"));
    CHECK(refused(std::string(5u << 20, 'x')));
    std::string many;
    for (int i = 0; i < 10001; ++i) many += "cpu|idle|(null)|(null)|1|1|n\n";
    CHECK(refused(many));
}

TEST_CASE("slurm wire: squeue rows map states, GPUs and uptime, and a job name with '|' cannot shift fields") {
    auto c = cluster_from(kClusterYaml);
    const std::string out =
        "17|RUNNING|gpu|gres:gpu:a100:2|1-02:03:04|1|None|tk-r1-main-dl100\n"
        "18|PENDING|gpu|gres/gpu:1|0:00|1|Resources|evil|TIMEOUT|x|y\n"
        "19_2|RUNNING|gpu|N/A|1:00|1|None|array\n"
        "20|NODE_FAIL|cpu|N/A|5:07|1|None|tk-r2-main-dl100\n"
        "21|SOMETHING_NEW|cpu|N/A|INVALID|1|None|n\n";
    auto rows = providers::slurm_parse_squeue(c, out);
    REQUIRE(rows.size() == 4);
    CHECK(rows[0].id == "lab/17");
    CHECK(rows[0].status == InstanceStatus::Running);
    CHECK(rows[0].gpu_count == 2);
    CHECK(rows[0].gpu_model == "A100 SXM4 80GB");
    CHECK(rows[0].uptime_s == doctest::Approx(93784));
    CHECK(rows[0].ssh->host == "login.example");
    CHECK(rows[1].name == "evil|TIMEOUT|x|y");
    CHECK(rows[1].status_raw == "PENDING");
    CHECK(rows[1].status_detail == "Resources");
    CHECK(rows[1].gpu_count == 1);
    CHECK(rows[2].status == InstanceStatus::Terminated);
    CHECK(rows[2].status_raw == "NODE_FAIL");
    CHECK(rows[2].uptime_s == doctest::Approx(307));
    CHECK(rows[3].status == InstanceStatus::Unknown);  // a state we do not know is never a guess
    CHECK(!rows[3].uptime_s);
    CHECK(providers::slurm_status("TIMEOUT") == InstanceStatus::Terminated);
    CHECK(providers::slurm_status("REQUEUED") == InstanceStatus::Pending);
    CHECK_THROWS_AS(providers::slurm_parse_squeue(c, "1|RUNNING\n"), common::Error);
    CHECK_THROWS_AS(providers::slurm_parse_sbatch(c, "Submitted batch job x\n"), common::Error);
    CHECK(providers::slurm_parse_sbatch(c, "warning: something\n4242;lab\n") == 4242);
}

TEST_CASE("slurm: search lists the partition's GPU shapes and idle counts from the real sinfo") {
    tests::SlurmFixture slurm;
    tests::TempDir dir;
    Broker b(broker_options(slurm, dir, "      price_usd_per_gpu_hour: 0.25\n"));
    OfferFilter f;
    f.providers = {"slurm"};
    auto found = b.search(f, SortKey::Price, 0);
    INFO(slurm.logs());
    REQUIRE(found.offers.size() == 2);
    const auto & one = found.offers[0];
    CHECK(one.offer_id == slurm.cluster_name() + "/cpu/tiny/1");
    CHECK(one.gpu_model == "Tiny");
    CHECK(one.gpu_count == 1);
    CHECK(one.price_usd_per_hour_total == doctest::Approx(0.25));
    CHECK(one.availability == "1 nodes free, 2/2 GPUs idle");
    CHECK(one.vcpus == slurm.cpus());
    CHECK(found.offers[1].offer_id == slurm.cluster_name() + "/cpu/tiny/2");

    // One GPU taken by someone else's job: the two-GPU shape no longer fits, one GPU stays idle.
    auto held = slurm.run({"sbatch", "--parsable", "--gres=gpu:1", "--output=/dev/null", "--wrap=sleep 60"});
    REQUIRE(held.exit_code == 0);
    for (int i = 0; i < 50 && slurm.run({"squeue", "--noheader", "--states=RUNNING", "--format=%i"}).out.empty(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    found = b.search(f, SortKey::Price, 0);
    REQUIRE(found.offers.size() == 2);
    CHECK(found.offers[0].availability == "1 nodes free, 1/2 GPUs idle");
    CHECK(found.offers[1].availability == "0 nodes free, 1/2 GPUs idle");
}

TEST_CASE("slurm: broker create, instances list and terminate through the broker program, proven gone by squeue") {
    tests::SlurmFixture slurm;
    tests::TempDir dir;
    const std::string config = slurm.write_broker_config(dir / "broker.yaml");
    const std::string offer = "slurm:" + slurm.cluster_name() + "/cpu/tiny/1";
    common::generate_ed25519_key(dir / "id", "test");  // create records a key even where none is installed
    auto created = broker_cli(config, dir, {"create", "--offer", offer, "--run-id", "sl1", "--max-lifetime", "20m",
                                            "--no-wait", "--json", "--ssh-key", dir / "id"});
    INFO(created.out, created.err, slurm.logs());
    REQUIRE(created.exit_code == 0);
    auto inst = nlohmann::json::parse(created.out);
    const std::string ref = inst.at("provider").get<std::string>() + ":" + inst.at("id").get<std::string>();
    const std::string job = ref.substr(ref.find('/') + 1);
    CHECK(ref.rfind("slurm:" + slurm.cluster_name() + "/", 0) == 0);
    // Slurm has our job under our instance name, with the GPU and a time limit within the lifetime.
    auto shown = slurm.run({"squeue", "--noheader", "--jobs=" + job, "--format=%j|%b|%l"});
    CHECK(shown.out.rfind("tk-sl1-main-dl", 0) == 0);
    CHECK(shown.out.find("|gres:gpu:tiny:1|") != std::string::npos);
    CHECK((shown.out.find("|19:00") != std::string::npos || shown.out.find("|20:00") != std::string::npos));

    // Someone else's job on the cluster is not listed (no toolkit name).
    REQUIRE(slurm.run({"sbatch", "--parsable", "--job-name=not-ours", "--output=/dev/null", "--wrap=sleep 60"}).exit_code == 0);
    auto listed = broker_cli(config, dir, {"instances", "list", "--json"});
    REQUIRE(listed.exit_code == 0);
    auto rows = nlohmann::json::parse(listed.out).at("instances");
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].at("ref") == ref);
    CHECK(rows[0].at("gpu_count") == 1);

    auto gone = broker_cli(config, dir, {"instances", "terminate", ref, "--yes", "--json"});
    INFO(gone.out, gone.err);
    CHECK(gone.exit_code == 0);
    // The proof, independently of the broker: the job has ended as CANCELLED; not-ours still runs.
    const std::string jobs = all_jobs(slurm);
    CHECK(jobs.find(job + " CANCELLED tk-sl1-main-dl") != std::string::npos);
    // not-ours is untouched: running, or still queued where the scheduler has not reached it since
    // our job freed the node (seen on a loaded 2-core machine), never cancelled.
    INFO(jobs);
    CHECK((jobs.find("RUNNING not-ours") != std::string::npos || jobs.find("PENDING not-ours") != std::string::npos));
    auto after = broker_cli(config, dir, {"instances", "list", "--json", "--provider", "slurm"});
    CHECK(nlohmann::json::parse(after.out).at("instances").empty());
    // Terminating again is success: an ended job is already gone.
    CHECK(broker_cli(config, dir, {"instances", "terminate", ref, "--yes"}).exit_code == 0);
}

TEST_CASE("slurm: a hostile account and hostile environment values stay values on the login node's shell") {
    tests::SlurmFixture slurm;
    tests::TempDir dir;
    const std::string canary = dir / "pwned";
    const std::string hostile = "x'; touch " + canary + "; echo '";
    const std::string config = slurm.write_broker_config(dir / "broker.yaml", "      account: \"" + hostile + "\"\n");
    Broker b([&] {
        BrokerOptions bo;
        bo.config_path = config;
        bo.state_dir = dir / "state";
        return bo;
    }());
    auto inst = create_job(b, "hostile", 3600,
                           {{"A", "$(touch " + canary + ")"}, {"B", "line1\nTK_SLURM_EOF_0\n`touch " + canary + "`"}});
    CHECK(inst.name.rfind("tk-hostile-main-dl", 0) == 0);
    const std::string job = inst.id.substr(inst.id.find('/') + 1);
    auto shown = slurm.run({"scontrol", "show", "job", job});
    INFO(shown.out);
    // Slurm stores account names in lower case.
    CHECK(to_lower(shown.out).find("account=" + to_lower(hostile)) != std::string::npos);
    CHECK(!std::filesystem::exists(canary));
    // The values reached the job script as single-quoted words, the fake delimiter line included.
    auto script = slurm.run({"scontrol", "write", "batch_script", job, "-"});
    CHECK(script.out.find("export A='$(touch " + canary + ")'\n") != std::string::npos);
    CHECK(script.out.find("export B='line1\nTK_SLURM_EOF_0\n`touch " + canary + "`'\n") != std::string::npos);
    // A name that is not a job id is refused before anything reaches the cluster.
    CHECK_THROWS_AS(b.provider("slurm").terminate(slurm.cluster_name() + "/1;reboot"), common::Error);
    // The job can end itself: the declared self-stop command is scancel of its own id.
    CHECK(provider_caps("slurm").self_end == SelfEnd::SelfStop);
    CHECK(provider_caps("slurm").native_deadline);
    CHECK(provider_caps("slurm").batch_jobs);
    CHECK(b.provider("slurm").self_stop_command(inst.id) == std::vector<std::string>{"scancel", job});
    b.provider("slurm").terminate(inst.id);
    CHECK(!std::filesystem::exists(canary));
}

TEST_CASE("slurm: a bad cluster definition stops the broker before anything reaches the cluster") {
    tests::SlurmFixture slurm;
    tests::TempDir dir;
    const std::string config = slurm.write_broker_config(dir / "broker.yaml", "      price_usd_per_gpu_hour: -1\n");
    common::generate_ed25519_key(dir / "id", "test");
    auto r = broker_cli(config, dir, {"create", "--offer", "slurm:" + slurm.cluster_name() + "/cpu/tiny/1", "--no-wait",
                                      "--ssh-key", dir / "id"});
    INFO(r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("slurm.clusters[0].price_usd_per_gpu_hour") != std::string::npos);
    CHECK(all_jobs(slurm).empty());
    // An unknown cluster in an offer id is a clear error too, and submits nothing.
    const std::string good = slurm.write_broker_config(dir / "good.yaml");
    auto unknown = broker_cli(good, dir, {"create", "--offer", "slurm:nope/cpu/tiny/1", "--no-wait", "--ssh-key", dir / "id"});
    CHECK(unknown.exit_code != 0);
    CHECK(all_jobs(slurm).empty());
}

namespace {

// Waits until squeue shows `job` in `state` (the administrator's view), up to `seconds`.
bool wait_state(const tests::SlurmFixture & slurm, const std::string & job, const std::string & state, int seconds) {
    for (int i = 0; i < seconds * 4; ++i) {
        if (slurm.run({"squeue", "--noheader", "--states=all", "--jobs=" + job, "--format=%T"}).out == state + "\n") return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
    return false;
}

}  // namespace

TEST_CASE("slurm: ends the cluster decides are reported as such: node set DOWN is NODE_FAIL (no requeue), past --time is TIMEOUT") {
    tests::SlurmFixture slurm;
    tests::TempDir dir;
    Broker b(broker_options(slurm, dir));
    auto& p = b.provider("slurm");

    auto node_job = create_job(b, "down", 3600);
    const std::string id1 = node_job.id.substr(node_job.id.find('/') + 1);
    REQUIRE(wait_state(slurm, id1, "RUNNING", 20));
    CHECK(p.get(node_job.id)->status == InstanceStatus::Running);
    // Our jobs are never requeued behind the caller's back: the administrator's requeue is refused.
    CHECK(slurm.run({"scontrol", "requeue", id1}).exit_code != 0);
    REQUIRE(slurm.run({"scontrol", "update", "NodeName=" + slurm.node(), "State=DOWN", "Reason=test"}).exit_code == 0);
    REQUIRE(wait_state(slurm, id1, "NODE_FAIL", 20));
    auto seen = p.get(node_job.id);
    REQUIRE(seen);
    CHECK(seen->status == InstanceStatus::Terminated);
    CHECK(seen->status_raw == "NODE_FAIL");
    slurm.run({"scontrol", "update", "NodeName=" + slurm.node(), "State=RESUME"});

    // --time is whole minutes: a 60 s lifetime is --time=1, and Slurm ends the job as TIMEOUT.
    auto timed = create_job(b, "late", 60);
    const std::string id2 = timed.id.substr(timed.id.find('/') + 1);
    CHECK(slurm.run({"squeue", "--noheader", "--jobs=" + id2, "--format=%l"}).out == "1:00\n");
    REQUIRE(wait_state(slurm, id2, "TIMEOUT", 150));
    seen = p.get(timed.id);
    REQUIRE(seen);
    CHECK(seen->status == InstanceStatus::Terminated);
    CHECK(seen->status_raw == "TIMEOUT");
    std::vector<ProviderFailure> failures;
    CHECK(b.list({"slurm"}, failures).empty());  // ended jobs are not listed
}

TEST_CASE("slurm: a batch job runs its script and ends, its output appended in the shared directory with its exit code beside it") {
    tests::SlurmFixture slurm;
    tests::TempDir dir;
    Broker b(broker_options(slurm, dir));
    const Offer offer = one_gpu_offer(b);
    auto site = b.provider("slurm").batch_site(offer);
    CHECK(site.work_dir == slurm.shared_dir());
    CHECK(site.login.port == slurm.login().port());
    const std::string out = slurm.shared_dir() + "/jobs/one.out";
    CreateRequest r;
    r.offer = offer;
    r.deadline_unix = static_cast<long long>(common::real_clock().unix_now()) + 600;
    r.name = "tk-batch1-build-dl" + std::to_string(r.deadline_unix);
    // A body that a naive shell splice would break: quotes and $ stay literal.
    r.batch = BatchScript{"echo 'it ran: $HOME stays literal'\necho \"gres: ${SLURM_JOB_GPUS:-none}\"\nexit 3", out, false};
    auto inst = b.provider("slurm").create(r);
    const std::string job = inst.id.substr(inst.id.find('/') + 1);
    INFO(slurm.logs());
    REQUIRE(wait_state(slurm, job, "FAILED", 30));  // exit 3
    auto seen = b.provider("slurm").get(inst.id);
    REQUIRE(seen);
    CHECK(seen->status == InstanceStatus::Terminated);
    CHECK(seen->status_raw == "FAILED");
    std::ifstream in(out);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(text.find("toolkit-batch: start job " + job + " restart 0 on ") != std::string::npos);
    CHECK(text.find("it ran: $HOME stays literal\n") != std::string::npos);
    CHECK(text.find("gres: none\n") != std::string::npos);  // use_gpus false: no GPU asked for
    std::ifstream ex(out + ".exit");
    std::string code;
    std::getline(ex, code);
    CHECK(code == "3");
    auto shown = slurm.run({"squeue", "--noheader", "--states=all", "--jobs=" + job, "--format=%b"});
    CHECK(shown.out.find("gpu") == std::string::npos);
    // A relative or templated output path is refused before anything is submitted.
    r.batch->output_path = "rel.out";
    CHECK_THROWS_AS(b.provider("slurm").create(r), common::Error);
    r.batch->output_path = slurm.shared_dir() + "/%j.out";
    CHECK_THROWS_AS(b.provider("slurm").create(r), common::Error);
}
