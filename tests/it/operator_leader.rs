//! Leader election between operator replicas on a real apiserver's Lease: only the leader
//! reconciles; a second replica waits; it takes over at once when the leader shuts down (the
//! Lease is released) and after one lease duration when the leader just stops renewing.

#[path = "common/operator.rs"]
mod operator;

use std::time::{Duration, Instant};

use flmon_crds::FLMonitor;
use flmon_operator::leader::{LeaderElector, LeaseConfig};
use flmon_tests::Kube;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use operator::{Operator, apply_yaml, elected_args, eventually, install_flmon_crds, wait_condition};

const MONITOR: &str = "apiVersion: flmon.io/v1alpha1
kind: FLMonitor
metadata: {name: elected}
spec:
  selector: {matchLabels: {app: elected}}
";

fn replica(namespace: &str, identity: &str) -> Operator {
    let args = elected_args(namespace, identity, &[]);
    Operator::start(Kube::shared(), args)
}

#[tokio::test]
async fn a_second_replica_waits_while_the_first_leads_and_takes_over_when_it_shuts_down() {
    let kube = Kube::shared();
    let client = kube.client().await;
    install_flmon_crds(kube, &client).await;
    let operator_namespace = kube.namespace("flmon-system").await;
    let first = replica(&operator_namespace, "replica-a");
    eventually("replica-a to lead", Duration::from_secs(45), || async {
        first.metrics.is_leader().then_some(())
    })
    .await;
    let second = replica(&operator_namespace, "replica-b");

    let ns = kube.namespace("elected").await;
    apply_yaml(&client, &ns, MONITOR).await;
    let monitors: Api<FLMonitor> = Api::namespaced(client.clone(), &ns);
    wait_condition(&monitors, "elected", "Ready", "True").await;
    // Well past a lease duration: the follower is still waiting and has reconciled nothing.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(first.metrics.is_leader());
    assert!(!second.metrics.is_leader(), "two leaders");
    assert!(first.metrics.reconciles("FLMonitor", "success") > 0);
    assert_eq!(
        second.metrics.reconciles("FLMonitor", "success"),
        0,
        "a follower reconciled"
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), &operator_namespace);
    let lease = leases.get("flmon-operator").await.expect("the Lease exists");
    assert_eq!(
        lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()),
        Some("replica-a")
    );

    // The leader shuts down and releases the Lease: the follower takes over well within a
    // lease duration, and reconciles the existing monitors.
    let stopped = Instant::now();
    first.stop().expect("replica-a stops cleanly");
    eventually("replica-b to lead", Duration::from_secs(10), || async {
        second.metrics.is_leader().then_some(())
    })
    .await;
    let takeover = stopped.elapsed();
    assert!(takeover < Duration::from_secs(4), "takeover took {takeover:?}");
    eventually("replica-b to reconcile", Duration::from_secs(45), || async {
        (second.metrics.reconciles("FLMonitor", "success") > 0).then_some(())
    })
    .await;
    let lease = leases.get("flmon-operator").await.expect("the Lease exists");
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    println!("takeover after a graceful shutdown: {takeover:?}");
}

#[tokio::test]
async fn a_leader_that_stops_renewing_is_replaced_after_one_lease_duration() {
    let kube = Kube::shared();
    let client = kube.client().await;
    let namespace = kube.namespace("lease").await;
    let config = |identity: &str| LeaseConfig {
        lease_duration: Duration::from_secs(3),
        ..LeaseConfig::new(&namespace, "flmon-operator", identity)
    };
    let mut leader = LeaderElector::new(client.clone(), config("a"));
    let mut follower = LeaderElector::new(client.clone(), config("b"));
    assert!(leader.try_acquire_or_renew().await.expect("acquire"));
    assert!(
        leader.try_acquire_or_renew().await.expect("renew"),
        "the holder renews"
    );
    // The leader now goes silent (a crash: no release).
    let silent = Instant::now();
    assert!(
        !follower.try_acquire_or_renew().await.expect("try"),
        "the Lease is held"
    );
    let acquired = loop {
        if follower.try_acquire_or_renew().await.expect("try") {
            break silent.elapsed();
        }
        assert!(
            silent.elapsed() < Duration::from_secs(15),
            "the follower never took over"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        acquired >= Duration::from_secs(3),
        "took over after {acquired:?}, before the lease expired"
    );
    // The old leader comes back and finds it lost the Lease.
    assert!(!leader.try_acquire_or_renew().await.expect("try"));
    println!("takeover after the leader went silent: {acquired:?}");
}
