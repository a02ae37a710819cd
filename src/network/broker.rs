//! The job queue's broker as the runners' firewall sees it: the hosts of the effective queue
//! URI (reactive mode), to be rejected for runners like the host. Pure; the URI itself is a
//! secret and never reaches here, only its credential-free host list
//! ([`crate::reactive::source::MqUri::host`]).

/// The host names and IPv4 literals of `host[:port][,host[:port]...]` (MongoDB lists several,
/// Redis one), sorted, without duplicates. IPv6 literals (`[::1]:6379`) are left out: the
/// ACL rejects all IPv6.
pub fn broker_hosts(host_list: &str) -> Vec<String> {
    let mut hosts: Vec<String> = host_list
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty() && !h.starts_with('['))
        .map(|h| h.split(':').next().unwrap_or(h).to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_host_of_a_mongodb_list_and_the_redis_host_without_ports() {
        assert_eq!(
            broker_hosts("mongo-0.internal:27017,10.1.2.3:27018,Mongo-0.internal"),
            ["10.1.2.3", "mongo-0.internal"]
        );
        assert_eq!(broker_hosts("redis.internal"), ["redis.internal"]);
        assert_eq!(broker_hosts("[fd00::1]:6379"), Vec::<String>::new());
        assert_eq!(broker_hosts(""), Vec::<String>::new());
    }

    #[test]
    fn the_hosts_of_a_parsed_uri_carry_no_credentials() {
        let uri = crate::reactive::source::parse_mq_uri(
            "mongodb://user:s3cret@db-1:27017,db-2/github-runner-webhook-router?replicaSet=rs0",
        )
        .unwrap();
        let hosts = broker_hosts(uri.host());
        assert_eq!(hosts, ["db-1", "db-2"]);
        assert!(!hosts.concat().contains("s3cret"));
        let redis = crate::reactive::source::parse_mq_uri("redis://:pw@10.0.0.7:6379/1").unwrap();
        assert_eq!(broker_hosts(redis.host()), ["10.0.0.7"]);
    }
}
