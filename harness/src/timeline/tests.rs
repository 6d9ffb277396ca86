//! The timeline's data from a hand-made run directory.

use super::*;

fn run_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("traces")).unwrap();
    std::fs::write(d.path().join("nids.json"), r#"[["oss1",["1@dma"]],["c1",["2@dma"]],["c2",["3@dma"]]]"#).unwrap();
    let w = |n: &str, t: &str| std::fs::write(d.path().join("traces").join(format!("{n}.jsonl")), t).unwrap();
    w(
        "c1",
        concat!(
            r#"{"ev":"SEND","mlength":520,"peer":"12345-1@dma","portal":28,"status":0,"t_us":10}"#,
            "\n",
            r#"{"ev":"SEND","mlength":520,"peer":"12345-1@dma","portal":28,"status":0,"t_us":12}"#,
            "\n",
            r#"{"ev":"PUT","mlength":416,"peer":"12345-1@dma","portal":4,"status":0,"t_us":50}"#,
            "\n",
            r#"{"ost":0,"rpc":"OST_CONNECT","status":0,"t_us":50,"xid":7}"#,
            "\n",
            r#"{"ev":"SEND","mlength":432,"peer":"12345-1@dma","portal":6,"status":-5,"t_us":60}"#,
            "\n"
        ),
    );
    w(
        "oss1",
        concat!(
            r#"{"ev":"PUT","mlength":520,"peer":"12345-2@dma","portal":28,"status":0,"t_us":11}"#,
            "\n",
            r#"{"fault":"lnet_delay","msg":"PUT","portal":28,"src":"2@dma","t_us":11}"#,
            "\n",
            r#"{"rpc":"OST_CONNECT","peer":"12345-2@dma","status":0,"t_us":30,"xid":7}"#,
            "\n",
            r#"{"ev":"SEND","mlength":416,"peer":"12345-2@dma","portal":4,"status":0,"t_us":55}"#,
            "\n",
            r#"{"ev":"PUT","mlength":520,"pe"#
        ),
    );
    std::fs::write(
        d.path().join("traces/faults.jsonl"),
        concat!(
            r#"{"action":"rule added","fault":"lnet_drop#1","node":"oss1","t_us":0}"#,
            "\n",
            r#"{"action":"paused","fault":"pause","node":"oss1","t_us":20}"#,
            "\n",
            r#"{"action":"rules added","fault":"partition","rules":3,"what":"partition [\"c2\"] | [\"oss1\"]","t_us":25}"#,
            "\n",
            r#"{"action":"resumed","fault":"pause","node":"oss1","t_us":40}"#,
            "\n",
            r#"{"action":"rules removed","fault":"partition#12","rules":3,"what":"heal partition [\"c2\"] | [\"oss1\"]","t_us":45}"#,
            "\n",
            r#"{"action":"fabric cut","fabric":"dma0","fault":"partition","pairs":1,"what":"partition dma0 [\"c1\"] | [\"oss1\"]","t_us":52}"#,
            "\n",
            r#"{"action":"killed","fault":"device_restart","net":"dma0","t_us":58}"#,
            "\n",
            r#"{"action":"fabric healed","fabric":"dma0","fault":"partition","pairs":1,"what":"heal partition dma0 [\"c1\"] | [\"oss1\"]","t_us":59}"#,
            "\n"
        ),
    )
    .unwrap();
    d
}

#[test]
fn arrivals_are_matched_with_their_sends_in_order() {
    let d = run_dir();
    let t = load(d.path()).unwrap();
    assert_eq!(t.lanes, ["oss1", "c1", "c2"]);
    let a: Vec<_> = t.arrows.iter().map(|a| (a.t0, a.t1, a.from, a.to, a.kind.as_str(), a.status)).collect();
    // c1's first HELLO-sized PUT reached oss1; the second was never seen arriving; the reply
    // arrived (sent at 55, seen at 50: drawn from the earlier); the failed send is a red stub.
    assert_eq!(a, [(10, 11, 1, 0, "PUT", 0), (12, 12, 1, 0, "SEND", 0), (50, 50, 0, 1, "PUT", 0), (60, 60, 1, 0, "SEND", -5)]);
    assert_eq!(t.end_us, 60);
}

#[test]
fn an_rpcs_client_and_server_lines_share_a_group() {
    let t = load(run_dir().path()).unwrap();
    let rpcs: Vec<_> = t.marks.iter().filter(|m| m.cat == "rpc").map(|m| (m.lane, m.group.clone().unwrap(), m.label.clone())).collect();
    assert_eq!(rpcs, [(0, "c1:7".to_string(), "OST_CONNECT x7 from c1 status=0".to_string()), (1, "c1:7".into(), "OST_CONNECT x7 ost0 status=0".into())]);
    let fault = t.marks.iter().find(|m| m.cat == "fault").unwrap();
    assert_eq!(fault.label, "lnet_delay PUT from c1 portal=28");
}

#[test]
fn fault_windows_pair_opening_and_closing_records() {
    let t = load(run_dir().path()).unwrap();
    let w: Vec<_> = t.windows.iter().map(|w| (w.t0, w.t1, w.what.as_str(), w.lanes.clone())).collect();
    assert_eq!(
        w,
        [
            (0, 0, "lnet_drop#1 rule added", vec![0]),
            (20, 40, "pause oss1", vec![0]),
            (25, 45, "partition [\"c2\"] | [\"oss1\"]", vec![0, 1, 2]),
            (52, 59, "partition dma0 [\"c1\"] | [\"oss1\"]", vec![0, 1, 2]),
            (58, 60, "device_restart dma0 (not closed)", vec![0, 1, 2]),
        ]
    );
}

#[test]
fn the_page_inlines_its_data_and_cannot_be_broken_out_of() {
    let mut t = load(run_dir().path()).unwrap();
    t.title = "<b>run</b>".into();
    t.lanes[0] = "</script><script>alert(1)</script>".into();
    let page = render(&t);
    assert!(!page.contains("/*DATA*/null") && page.contains("&lt;b&gt;run&lt;/b&gt;"));
    assert_eq!(page.matches("</script>").count(), PAGE.matches("</script>").count(), "a lane name closed the script");
    assert!(!page.contains("src=\"http") && !page.contains("href=\"http"), "the page must not fetch anything");
}

#[test]
fn a_directory_that_is_not_a_run_and_a_bad_trace_line_are_named() {
    let d = tempfile::tempdir().unwrap();
    assert!(load(d.path()).unwrap_err().to_string().ends_with("not the artifacts of a run (no nids.json)"));
    let d = run_dir();
    std::fs::write(d.path().join("traces/c2.jsonl"), "{\"ev\":\"PUT\"}\nnot json\n{}\n").unwrap();
    let e = load(d.path()).unwrap_err().to_string();
    assert!(e.contains("c2.jsonl:2: "), "{e}");
}

#[test]
fn a_dropped_send_does_not_shift_the_pairs_after_it() {
    // Sent at 10 (dropped), 100 and 200; arrivals at 101 and 201; a completion 1 ms after its
    // arrival still pairs, one far later does not.
    let mut q = vec![(10, 0), (100, 0), (200, 0)];
    assert_eq!(take_nearest(&mut q, 101), Some((100, 0)));
    assert_eq!(take_nearest(&mut q, 201), Some((200, 0)));
    assert_eq!(q, [(10, 0)]);
    let mut q = vec![(5_000, 0)];
    assert_eq!(take_nearest(&mut q, 4_000), Some((5_000, 0)));
    let mut q = vec![(9_000, 0)];
    assert_eq!(take_nearest(&mut q, 4_000), None);
}
