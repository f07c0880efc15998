//! Wire compatibility of `proto/` with the CRI fact sheet: every message,
//! field number, type and option of the closure reachable from the served RPCs
//! is compared with a table transcribed independently from
//! `../shared/spec/cri-v1-image-api.md` (`proto_wire_spec_table.txt`), and a
//! full `PullImageRequest` round-trips byte for byte.

use cri_imaged::api::proto::runtime::v1 as cri;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorProto, FileDescriptorSet};
use std::collections::{BTreeMap, BTreeSet};

const TABLE: &str = include_str!("proto_wire_spec_table.txt");

#[derive(Default)]
struct Spec {
    msgs: BTreeMap<String, Vec<(i32, String, String)>>,
    enums: BTreeMap<String, Vec<(String, i32)>>,
    rpcs: Vec<(String, String, String, String, bool)>,
}

fn parse_spec() -> Spec {
    let mut s = Spec::default();
    enum Cur {
        None,
        Msg(String),
        Enum(String),
    }
    let mut cur = Cur::None;
    for line in TABLE.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        match w[0] {
            "msg" => {
                s.msgs.insert(w[1].into(), vec![]);
                cur = Cur::Msg(w[1].into());
            }
            "enum" => {
                s.enums.insert(w[1].into(), vec![]);
                cur = Cur::Enum(w[1].into());
            }
            "rpc" => {
                let (out, streaming) = match w[4].strip_prefix("stream:") {
                    Some(o) => (o, true),
                    None => (w[4], false),
                };
                s.rpcs
                    .push((w[1].into(), w[2].into(), w[3].into(), out.into(), streaming));
            }
            _ => match &cur {
                Cur::Msg(m) => s.msgs.get_mut(m).unwrap().push((
                    w[0].parse().unwrap(),
                    w[1].into(),
                    w[2..].join(" "),
                )),
                Cur::Enum(e) => s
                    .enums
                    .get_mut(e)
                    .unwrap()
                    .push((w[0].into(), w[1].parse().unwrap())),
                Cur::None => panic!("stray line {line}"),
            },
        }
    }
    s
}

fn fds() -> FileDescriptorSet {
    FileDescriptorSet::decode(cri_imaged::api::proto::DESCRIPTOR_SET).unwrap()
}

fn file<'a>(set: &'a FileDescriptorSet, name: &str) -> &'a FileDescriptorProto {
    set.file
        .iter()
        .find(|f| f.name() == name)
        .unwrap_or_else(|| panic!("no file {name}"))
}

/// Render a field's type in the spec table's notation.
fn render(msg: &DescriptorProto, f: &prost_types::FieldDescriptorProto) -> String {
    let scalar = |t: Type| {
        match t {
            Type::String => "string",
            Type::Bool => "bool",
            Type::Int32 => "int32",
            Type::Int64 => "int64",
            Type::Uint32 => "uint32",
            Type::Uint64 => "uint64",
            other => panic!("unexpected scalar {other:?}"),
        }
        .to_string()
    };
    let tn = f
        .type_name()
        .strip_prefix(".runtime.v1.")
        .unwrap_or(f.type_name())
        .to_string();
    let base = match f.r#type() {
        Type::Message => {
            // map entries are nested messages named <Field>Entry with map_entry=true
            let entry = msg.nested_type.iter().find(|n| {
                n.options.as_ref().is_some_and(|o| o.map_entry())
                    && tn == format!("{}.{}", msg.name(), n.name())
            });
            if let Some(e) = entry {
                assert_eq!(f.label(), Label::Repeated);
                let k = &e.field[0];
                let v = &e.field[1];
                assert_eq!((k.number(), k.name(), k.r#type()), (1, "key", Type::String));
                assert_eq!(
                    (v.number(), v.name(), v.r#type()),
                    (2, "value", Type::String)
                );
                return "map<string,string>".into();
            }
            tn
        }
        Type::Enum => format!("enum {tn}"),
        t => scalar(t),
    };
    assert!(
        f.proto3_optional.is_none() || !f.proto3_optional(),
        "no proto3 optional in CRI"
    );
    assert!(f.oneof_index.is_none(), "no oneof in CRI");
    match f.label() {
        Label::Repeated => format!("repeated {base}"),
        Label::Optional => base,
        Label::Required => panic!("required in proto3?"),
    }
}

#[test]
fn runtime_v1_matches_spec_table() {
    let spec = parse_spec();
    assert_eq!(spec.msgs.len(), 45, "spec says 45 messages");
    assert_eq!(spec.enums.len(), 4, "spec says 4 enums");
    let set = fds();
    let f = file(&set, "runtime/v1/api.proto");
    assert_eq!(f.syntax(), "proto3");
    assert_eq!(f.package(), "runtime.v1");
    assert!(f.dependency.is_empty(), "no imports");
    assert_eq!(
        f.options.as_ref().unwrap().go_package(),
        "k8s.io/cri-api/pkg/apis/runtime/v1"
    );

    // exactly the 45 messages, nothing extra
    let got: BTreeSet<&str> = f.message_type.iter().map(|m| m.name()).collect();
    let want: BTreeSet<&str> = spec.msgs.keys().map(String::as_str).collect();
    assert_eq!(got, want);

    for m in &f.message_type {
        assert!(
            m.reserved_range.is_empty() && m.reserved_name.is_empty(),
            "{}: no reserved",
            m.name()
        );
        let mut got: Vec<(i32, String, String)> = m
            .field
            .iter()
            .map(|fd| (fd.number(), fd.name().to_string(), render(m, fd)))
            .collect();
        got.sort();
        let mut want = spec.msgs[m.name()].clone();
        want.sort();
        assert_eq!(got, want, "message {}", m.name());
        // only nested types allowed: map entries, plus SecurityProfile.ProfileType
        for n in &m.nested_type {
            assert!(
                n.options.as_ref().is_some_and(|o| o.map_entry()),
                "{}.{} must be a map entry",
                m.name(),
                n.name()
            );
        }
    }

    // enums: 3 top-level + 1 nested
    let mut enums = BTreeMap::new();
    for e in &f.enum_type {
        enums.insert(e.name().to_string(), e);
    }
    for m in &f.message_type {
        for e in &m.enum_type {
            enums.insert(format!("{}.{}", m.name(), e.name()), e);
        }
    }
    assert_eq!(
        enums.keys().cloned().collect::<BTreeSet<_>>(),
        spec.enums.keys().cloned().collect::<BTreeSet<_>>()
    );
    assert!(
        f.enum_type.iter().all(|e| e.name() != "ProfileType"),
        "ProfileType must be nested"
    );
    for (name, e) in &enums {
        let got: Vec<(String, i32)> = e
            .value
            .iter()
            .map(|v| (v.name().to_string(), v.number()))
            .collect();
        assert_eq!(&got, &spec.enums[name], "enum {name}");
    }

    // services: names, method order, types, streaming
    let svc: Vec<&str> = f.service.iter().map(|s| s.name()).collect();
    assert_eq!(
        svc.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from(["ImageService", "RuntimeService"])
    );
    for s in &f.service {
        let got: Vec<_> = s
            .method
            .iter()
            .map(|m| {
                (
                    s.name().to_string(),
                    m.name().to_string(),
                    m.input_type()
                        .trim_start_matches(".runtime.v1.")
                        .to_string(),
                    m.output_type()
                        .trim_start_matches(".runtime.v1.")
                        .to_string(),
                    m.server_streaming(),
                )
            })
            .collect();
        for m in &s.method {
            assert!(!m.client_streaming());
        }
        let want: Vec<_> = spec
            .rpcs
            .iter()
            .filter(|r| r.0 == s.name())
            .cloned()
            .collect();
        assert_eq!(got, want, "service {}", s.name());
    }
}

#[test]
fn field_options_via_reflection() {
    // prost_types::FieldOptions lacks debug_redact, so check through prost-reflect.
    let pool =
        prost_reflect::DescriptorPool::decode(cri_imaged::api::proto::DESCRIPTOR_SET).unwrap();
    let auth = pool.get_message_by_name("runtime.v1.AuthConfig").unwrap();
    let mut redacted = vec![];
    for msg in pool.all_messages() {
        for f in msg.fields() {
            let opts = f.options();
            if opts
                .get_field_by_name("debug_redact")
                .is_some_and(|v| v.as_bool() == Some(true))
            {
                redacted.push(f.full_name().to_string());
            }
            if f.field_descriptor_proto()
                .options
                .as_ref()
                .is_some_and(|o| o.deprecated())
            {
                assert_eq!(
                    f.full_name(),
                    "runtime.v1.LinuxSandboxSecurityContext.seccomp_profile_path"
                );
            }
        }
    }
    redacted.sort();
    assert_eq!(
        redacted,
        vec![
            "runtime.v1.AuthConfig.auth",
            "runtime.v1.AuthConfig.identity_token",
            "runtime.v1.AuthConfig.password",
            "runtime.v1.AuthConfig.registry_token",
        ]
    );
    assert!(auth.get_field_by_name("password").is_some());
    let seccomp = pool
        .get_message_by_name("runtime.v1.LinuxSandboxSecurityContext")
        .unwrap()
        .get_field_by_name("seccomp_profile_path")
        .unwrap();
    assert!(
        seccomp
            .field_descriptor_proto()
            .options
            .as_ref()
            .unwrap()
            .deprecated()
    );
    // declaration order as upstream: 1,2,3,8,4,5,11,6,9,10,7
    // (prost-reflect's fields() iterates by number, so read the raw descriptor.)
    let set = fds();
    let order: Vec<i32> = file(&set, "runtime/v1/api.proto")
        .message_type
        .iter()
        .find(|m| m.name() == "LinuxSandboxSecurityContext")
        .unwrap()
        .field
        .iter()
        .map(|f| f.number())
        .collect();
    assert_eq!(order, vec![1, 2, 3, 8, 4, 5, 11, 6, 9, 10, 7]);
}

#[test]
fn admin_v1_shape() {
    let set = fds();
    let f = file(&set, "cri_imaged/admin/v1/admin.proto");
    assert_eq!(f.package(), "cri_imaged.admin.v1");
    assert_eq!(f.dependency, vec!["runtime/v1/api.proto".to_string()]);
    let s = &f.service[0];
    assert_eq!(s.name(), "AdminService");
    let m: Vec<_> = s
        .method
        .iter()
        .map(|m| (m.name(), m.server_streaming()))
        .collect();
    assert_eq!(
        m,
        vec![
            ("PullWithProgress", true),
            ("CollectGarbage", false),
            ("ListLeases", false),
            ("DaemonStatus", false),
            ("PrepareMount", false),
            ("ReleaseMount", false),
        ]
    );
    let req = f
        .message_type
        .iter()
        .find(|m| m.name() == "PullWithProgressRequest")
        .unwrap();
    assert_eq!(req.field[0].type_name(), ".runtime.v1.ImageSpec");
    assert_eq!(req.field[1].type_name(), ".runtime.v1.AuthConfig");
    let pp = f
        .message_type
        .iter()
        .find(|m| m.name() == "PullProgress")
        .unwrap();
    assert_eq!(pp.oneof_decl.len(), 1);
    assert!(pp.field.iter().all(|f| f.oneof_index == Some(0)));
}

fn full_sandbox() -> cri::PodSandboxConfig {
    use cri::*;
    let kv = |k: &str, v: &str| [(k.to_string(), v.to_string())].into_iter().collect();
    let res = |n: i64| LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000 + n,
        cpu_shares: 1024,
        memory_limit_in_bytes: 1 << 30,
        oom_score_adj: -997,
        cpuset_cpus: "0-1".into(),
        cpuset_mems: "0".into(),
        hugepage_limits: vec![HugepageLimit {
            page_size: "2MB".into(),
            limit: 4 << 20,
        }],
        unified: kv("memory.high", "900000000"),
        memory_swap_limit_in_bytes: 2 << 30,
    };
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web-0".into(),
            uid: "1234-abcd".into(),
            namespace: "default".into(),
            attempt: 3,
        }),
        hostname: "web-0".into(),
        log_directory: "/var/log/pods/default_web-0_1234-abcd".into(),
        dns_config: Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        port_mappings: vec![PortMapping {
            protocol: Protocol::Sctp as i32,
            container_port: 8080,
            host_port: 0,
            host_ip: "127.0.0.1".into(),
        }],
        labels: kv("app", "web"),
        annotations: kv("kubernetes.io/config.source", "api"),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: "/kubepods/burstable/pod1234".into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Node as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Target as i32,
                    target_id: "ctr1".into(),
                    userns_options: Some(UserNamespace {
                        mode: NamespaceMode::Pod as i32,
                        uids: vec![IdMapping {
                            host_id: 65536,
                            container_id: 0,
                            length: 65536,
                        }],
                        gids: vec![IdMapping {
                            host_id: 131072,
                            container_id: 0,
                            length: 65536,
                        }],
                    }),
                }),
                selinux_options: Some(SeLinuxOption {
                    user: "system_u".into(),
                    role: "system_r".into(),
                    r#type: "container_t".into(),
                    level: "s0:c1,c2".into(),
                }),
                run_as_user: Some(Int64Value { value: 1000 }),
                run_as_group: Some(Int64Value { value: 0 }),
                readonly_rootfs: true,
                supplemental_groups: vec![1, 2, -3, i64::MAX],
                supplemental_groups_policy: SupplementalGroupsPolicy::Strict as i32,
                privileged: true,
                seccomp: Some(SecurityProfile {
                    profile_type: security_profile::ProfileType::Localhost as i32,
                    localhost_ref: "profiles/audit.json".into(),
                }),
                apparmor: Some(SecurityProfile {
                    profile_type: security_profile::ProfileType::Unconfined as i32,
                    localhost_ref: String::new(),
                }),
                #[allow(deprecated)]
                seccomp_profile_path: "runtime/default".into(),
            }),
            sysctls: kv("net.ipv4.ip_forward", "1"),
            overhead: Some(res(1)),
            resources: Some(res(2)),
        }),
        windows: Some(WindowsPodSandboxConfig {
            security_context: Some(WindowsSandboxSecurityContext {
                run_as_username: "ContainerUser".into(),
                credential_spec: "{\"CmsPlugins\":[]}".into(),
                host_process: true,
                namespace_options: Some(WindowsNamespaceOption {
                    network: NamespaceMode::Node as i32,
                }),
            }),
        }),
    }
}

#[test]
fn pull_image_request_roundtrip() {
    let req = cri::PullImageRequest {
        image: Some(cri::ImageSpec {
            image: "docker.io/library/busybox:latest".into(),
            annotations: [("a".to_string(), "b".to_string())].into_iter().collect(),
            user_specified_image: "busybox".into(),
            runtime_handler: "runc".into(),
            image_ref: "sha256:abc".into(),
        }),
        auth: Some(cri::AuthConfig {
            username: "u".into(),
            password: "hunter2".into(),
            auth: "dTpodW50ZXIy".into(),
            server_address: "registry.example".into(),
            identity_token: "idtok".into(),
            registry_token: "regtok".into(),
        }),
        sandbox_config: Some(full_sandbox()),
    };
    let bytes = req.encode_to_vec();
    let back = cri::PullImageRequest::decode(&bytes[..]).unwrap();
    assert_eq!(back, req);

    // Independent wire check via prost-reflect: decode with the descriptor
    // (not the generated code) and look at a few deep fields by name.
    let pool =
        prost_reflect::DescriptorPool::decode(cri_imaged::api::proto::DESCRIPTOR_SET).unwrap();
    let desc = pool
        .get_message_by_name("runtime.v1.PullImageRequest")
        .unwrap();
    let dynm = prost_reflect::DynamicMessage::decode(desc, &bytes[..]).unwrap();
    let json = format!("{dynm:?}");
    assert!(json.contains("profiles/audit.json"));
    assert!(json.contains("user_specified_image"));

    // Hand-computed wire bytes: ImageSpec.image_ref is field 20, string -> tag (20<<3)|2 = 162 = 0xA2 0x01.
    let spec_bytes = cri::ImageSpec {
        image_ref: "x".into(),
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(spec_bytes, vec![0xA2, 0x01, 0x01, b'x']);
    // LinuxSandboxSecurityContext.supplemental_groups_policy = 11 (varint) -> tag 88 = 0x58.
    let sc = cri::LinuxSandboxSecurityContext {
        supplemental_groups_policy: 1,
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(sc, vec![0x58, 0x01]);
    // supplemental_groups (5) is packed: tag (5<<3)|2 = 0x2A.
    let sc = cri::LinuxSandboxSecurityContext {
        supplemental_groups: vec![1, 2],
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(sc, vec![0x2A, 0x02, 0x01, 0x02]);

    // Debug output must not leak the redacted secrets.
    let dbg = format!("{req:?}");
    for secret in ["hunter2", "dTpodW50ZXIy", "idtok", "regtok"] {
        assert!(!dbg.contains(secret), "Debug leaks {secret}");
    }
    assert!(dbg.contains("registry.example"));
}

#[test]
fn generated_services_exist() {
    // Paths of the generated server/client are what the kubelet calls.
    use cri_imaged::api::proto::runtime::v1::{image_service_server, runtime_service_server};
    assert_eq!(
        <image_service_server::ImageServiceServer<()> as tonic::server::NamedService>::NAME,
        "runtime.v1.ImageService"
    );
    assert_eq!(
        <runtime_service_server::RuntimeServiceServer<()> as tonic::server::NamedService>::NAME,
        "runtime.v1.RuntimeService"
    );
    let _ = cri_imaged::api::proto::cri_imaged::admin::v1::admin_service_client::AdminServiceClient::<
        tonic::transport::Channel,
    >::new;
}

/// `ListImagesResponse` is written by hand (it can carry images encoded
/// earlier): its bytes must decode, by the descriptor alone, as the upstream
/// message with every image in order, whichever way the images were given.
#[test]
fn hand_written_list_images_response_is_the_upstream_message_on_the_wire() {
    let image = |number: u32| cri::Image {
        id: format!("sha256:{number:064x}"),
        repo_tags: vec![format!("example.com/app:{number}")],
        repo_digests: vec![format!("example.com/app@sha256:{number:064x}")],
        size: 1000 + u64::from(number),
        uid: number.is_multiple_of(2).then_some(cri::Int64Value {
            value: i64::from(number),
        }),
        username: if !number.is_multiple_of(2) {
            "nobody".into()
        } else {
            String::new()
        },
        spec: Some(cri::ImageSpec {
            image: format!("sha256:{number:064x}"),
            annotations: [("index".to_owned(), number.to_string())].into(),
            ..Default::default()
        }),
        pinned: number == 3,
    };
    let all: Vec<cri::Image> = (0..5).map(image).collect();
    let response = cri::ListImagesResponse {
        images: all[..2].to_vec(),
        encoded_images: cri::ListImagesResponse::encode_images(all[2..].to_vec()),
    };
    let bytes = response.encode_to_vec();
    assert_eq!(bytes.len(), response.encoded_len());

    // Our decoder: every image, in order, in `images`.
    let decoded = cri::ListImagesResponse::decode(&bytes[..]).unwrap();
    assert_eq!(decoded.images, all);
    assert!(decoded.encoded_images.is_empty());
    // The same bytes as when every image is given decoded.
    let plain = cri::ListImagesResponse {
        images: all.clone(),
        ..Default::default()
    };
    assert_eq!(plain.encode_to_vec(), bytes);

    // The descriptor's view, independent of our code.
    let pool =
        prost_reflect::DescriptorPool::decode(cri_imaged::api::proto::DESCRIPTOR_SET).unwrap();
    let descriptor = pool
        .get_message_by_name("runtime.v1.ListImagesResponse")
        .unwrap();
    let dynamic = prost_reflect::DynamicMessage::decode(descriptor, &bytes[..]).unwrap();
    let images = dynamic.get_field_by_name("images").unwrap();
    let images = images.as_list().unwrap();
    assert_eq!(images.len(), all.len());
    for (listed, expected) in images.iter().zip(&all) {
        let listed = listed.as_message().unwrap();
        assert_eq!(
            listed.get_field_by_name("id").unwrap().as_str(),
            Some(expected.id.as_str())
        );
        assert_eq!(
            listed.get_field_by_name("size").unwrap().as_u64(),
            Some(expected.size)
        );
        assert_eq!(
            listed.get_field_by_name("pinned").unwrap().as_bool(),
            Some(expected.pinned)
        );
    }

    // An unknown field (a newer upstream) is skipped, not an error.
    let mut with_unknown = bytes.clone();
    with_unknown.extend_from_slice(&[0x10, 0x07]); // field 2, varint 7
    assert_eq!(
        cri::ListImagesResponse::decode(&with_unknown[..])
            .unwrap()
            .images,
        all
    );
    // A truncated answer is an error naming the field.
    let error = cri::ListImagesResponse::decode(&bytes[..bytes.len() - 3]).unwrap_err();
    assert!(
        error.to_string().contains("ListImagesResponse.images"),
        "{error}"
    );
}
