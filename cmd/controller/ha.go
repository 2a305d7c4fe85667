package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"time"

	nomadapi "github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-controller/internal/cluster"
	"github.com/agentkernel/agentkernel-controller/internal/leader"
	"github.com/agentkernel/agentkernel-controller/internal/nomad"
	"github.com/agentkernel/agentkernel-controller/internal/reconcile"
	"github.com/agentkernel/agentkernel-controller/internal/replica"
	"github.com/agentkernel/agentkernel-controller/internal/spec"
	"github.com/agentkernel/agentkernel-controller/internal/store"
)

// haNode is a cluster.Node with the replica the API's policy needs.
type haNode struct {
	*cluster.Node
	replica *replica.Replica
}

// newNode wires leader election and replication for -ha. listenURL is
// where the API listens, the default advertised address.
func newNode(cfg config, log *slog.Logger, nc *nomad.Client, nomadToken string, st *store.Store, listenURL string,
	newController func(owner string, allowGC bool) *reconcile.Controller) (*haNode, error) {
	self, err := instance(cfg, listenURL)
	if err != nil {
		return nil, err
	}
	rep, err := replica.New(replica.Config{
		Client: nc.API(), Namespace: nc.Namespace(), Prefix: cfg.HA.VariablePrefix, Store: st,
		ManagedJobs: func(ctx context.Context) (int, error) { return nc.CountManaged(ctx, "*") },
		SeedEmpty:   cfg.HA.SeedEmpty,
		Logger:      log.With("component", "replica"),
	})
	if err != nil {
		return nil, err
	}
	// The elector gets a client of its own: api.Locks sets retry options
	// on the client it is handed.
	lockClient, err := nomad.NewClient(nomad.Config{
		Address: nc.Address(), Token: nomadToken, Namespace: nc.Namespace(), Region: cfg.Nomad.Region,
		CACert: cfg.Nomad.CACert, ClientCert: cfg.Nomad.ClientCert, ClientKey: cfg.Nomad.ClientKey,
		RequestTimeout: cfg.requestTimeout(),
	})
	if err != nil {
		return nil, err
	}
	ttl, _ := time.ParseDuration(cfg.HA.LockTTL)
	delay, _ := time.ParseDuration(cfg.HA.LockDelay)
	var node *cluster.Node
	el, err := leader.New(leader.Config{
		Client: lockClient.API(), Namespace: nc.Namespace(), Path: rep.LockPath(),
		TTL: ttl, Delay: delay, Self: self, Logger: log.With("component", "leader"),
		// The lock is renewed only while the reconcile loop makes
		// progress.
		Healthy: func() error { return node.Healthy() },
	})
	if err != nil {
		return nil, err
	}
	log.Info("high availability on", "instance", self.ID, "advertise", self.Address,
		"lock", nc.Namespace()+"/"+rep.LockPath(), "ttl", ttl, "lock_delay", delay)
	node = cluster.New(cluster.Config{
		Self: self, Elector: el, Replica: rep, Store: st, LocalOwner: st.StoreID(),
		NewController: func(owner string, allowGC bool) (cluster.Controller, error) {
			return newController(owner, allowGC), nil
		},
		Logger: log.With("component", "cluster"),
	})
	return &haNode{Node: node, replica: rep}, nil
}

// instance names this instance and the address others reach it at.
func instance(cfg config, listenURL string) (leader.Instance, error) {
	id := cfg.HA.InstanceID
	if id == "" {
		id = os.Getenv("NOMAD_ALLOC_ID")
	}
	if id == "" {
		h, err := os.Hostname()
		if err != nil {
			return leader.Instance{}, fmt.Errorf("-ha: no -instance-id and no hostname: %w", err)
		}
		id = h
	}
	addr := cfg.HA.AdvertiseAddr
	if addr == "" {
		u, err := url.Parse(listenURL)
		if err != nil || u.Scheme != "http" {
			return leader.Instance{}, errors.New("-ha needs a TCP listener (-listen host:port) that other instances can reach, and -advertise-addr when it listens on all addresses")
		}
		host, _, _ := net.SplitHostPort(u.Host)
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			return leader.Instance{}, fmt.Errorf("-ha: the API listens on %s, which other instances cannot dial; set -advertise-addr to this instance's reachable URL", u.Host)
		}
		addr = listenURL
	}
	return leader.Instance{ID: id, Address: addr}, nil
}

// policies refuses what any of its members refuses.
type policies []interface {
	CheckPolicy(sb *spec.Sandbox) error
}

func (ps policies) CheckPolicy(sb *spec.Sandbox) error {
	var errs []error
	for _, p := range ps {
		if err := p.CheckPolicy(sb); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ownerPlanner plans with the owner ID of the current term, so that a
// leader's diffs match what it would write and what it counts as its own.
type ownerPlanner struct {
	nc     *nomad.Client
	render nomad.RenderOptions
	adopt  []string
	owner  func() string
}

func (p ownerPlanner) planner() nomad.Planner {
	r := p.render
	if o := p.owner(); o != "" {
		r.Owner = o
	}
	return nomad.Planner{Client: p.nc, Render: r, AdoptOwners: p.adopt}
}

func (p ownerPlanner) Plan(ctx context.Context, sb *spec.Sandbox) (*nomadapi.JobPlanResponse, error) {
	return p.planner().Plan(ctx, sb)
}

// Preflight without a term (a follower answering while the leader cannot
// be reached) does not know the cluster's owner ID, so it cannot tell the
// cluster's jobs from another controller's: it leaves the owner empty and
// reports only what is true for any owner.
func (p ownerPlanner) Preflight(ctx context.Context, sb *spec.Sandbox) (nomad.Obstacle, error) {
	np := p.planner()
	np.Render.Owner = p.owner()
	return np.Preflight(ctx, sb)
}
