// A Slurm cluster the `slurm` provider reaches through its login node over SSH, as written in the
// broker config (broker/README.md, "Slurm clusters"). The whole `slurm:` section is read and checked
// when the config is loaded, so a bad cluster definition is a usage error naming file:line and the
// key before any command reaches a cluster.
#pragma once

#include <string>
#include <vector>

#include "broker/instance.h"

namespace common {
class ConfigNode;
}

namespace broker {

inline constexpr size_t kMaxSlurmJumps = 4;

struct SlurmGpuType {
    std::string type;      // the GRES type as Slurm names it ("a100"); "" for an untyped GRES
    std::string model;     // what offers show ("A100 SXM4 80GB"); default: the type
    double vram_gb = 0;    // per GPU; 0 when unknown
};

struct SlurmPartition {
    std::string name;
    std::string gres = "gpu";              // the GRES name of this partition's GPUs
    std::vector<SlurmGpuType> gpu_types;   // optional: models and VRAM for the types Slurm reports
};

struct SlurmCluster {
    std::string name;                  // [a-z0-9_-], part of offer and instance ids
    SshEndpoint login;                 // user@host:port of the login node, the key that opens it, and
                                       // `jump:` (login.jump, at most kMaxSlurmJumps; hop keys default to `key`)
    std::string work_dir;              // shared by the login and compute nodes (absolute)
    std::string account;               // --account, optional
    std::string qos;                   // --qos, optional
    std::vector<std::string> module_load;  // lines run at the start of every job ("module load cuda/12.4")
    std::string container_image;       // --container-image (enroot/pyxis), optional
    long long default_time_s = 3600;   // --time when the caller gives no deadline
    double price_usd_per_gpu_hour = 0; // a site's internal cost; 0 for free clusters
    bool fetch_on_login = true;        // `fetch: login | job`: where model downloads run (compute nodes often have no internet)
    std::vector<SlurmPartition> partitions;
};

// Reads the `slurm:` section ({clusters: [...]}). Throws common::Error(Usage) at the offending key.
std::vector<SlurmCluster> parse_slurm_clusters(const common::ConfigNode & section);

}  // namespace broker
