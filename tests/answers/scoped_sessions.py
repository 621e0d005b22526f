"""Answers to the scoped-sessions assignment (tests/answers/__init__.py: how they are graded)."""

from answers import correct, wrong

ANSWERS = {
    "make-registry": [
        correct(
            "bind-keyword",
            '''
            def make_registry(engine):
                return scoped_session(sessionmaker(bind=engine))
            ''',
        ),
        correct(
            "configured-later",
            '''
            def make_registry(engine):
                factory = sessionmaker(expire_on_commit=False)
                factory.configure(bind=engine)
                return scoped_session(factory)
            ''',
        ),
        correct(
            "session-factory-keyword",
            '''
            def make_registry(engine):
                return scoped_session(session_factory=sessionmaker(engine, autoflush=True))
            ''',
        ),
        wrong(
            "a-sessionmaker",
            '''
            def make_registry(engine):
                return sessionmaker(engine)
            ''',
            "a sessionmaker is a registry",
        ),
        wrong(
            "one-registry-for-all-callers",
            '''
            _registry = None


            def make_registry(engine):
                global _registry
                if _registry is None:
                    _registry = scoped_session(sessionmaker(engine))
                return _registry
            ''',
            "one registry can serve every caller",
            keeps=1,
        ),
        wrong(
            "the-global-engine",
            '''
            def make_registry(bind):
                return scoped_session(sessionmaker(engine))
            ''',
            "the notebook's engine is the one meant",
            keeps=1,
        ),
        wrong(
            "one-scope-for-all-threads",
            '''
            def make_registry(engine):
                return scoped_session(sessionmaker(engine), scopefunc=lambda: "app")
            ''',
            "a scoped session is one session for the whole program",
            keeps=1,
        ),
    ],
    "worker": [
        correct(
            "registry-proxy",
            '''
            def worker(registry, name):
                try:
                    user = User(name=name)
                    registry.add(user)
                    registry.commit()
                    return user.id
                finally:
                    registry.remove()
            ''',
        ),
        correct(
            "id-at-flush",
            '''
            def worker(registry, name):
                session = registry()
                try:
                    user = User(name=name)
                    session.add(user)
                    session.flush()
                    new_id = user.id
                    session.commit()
                finally:
                    registry.remove()
                return new_id
            ''',
        ),
        correct(
            "begin-block",
            '''
            def worker(registry, name):
                try:
                    with registry.begin():
                        user = User(name=name)
                        registry.add(user)
                    return user.id
                finally:
                    registry.remove()
            ''',
        ),
        wrong(
            "never-removes",
            '''
            def worker(registry, name):
                session = registry()
                user = User(name=name)
                session.add(user)
                session.commit()
                return user.id
            ''',
            "a thread's session goes away by itself",
            keeps=2,
        ),
        wrong(
            "removes-only-after-success",
            '''
            def worker(registry, name):
                session = registry()
                user = User(name=name)
                session.add(user)
                session.commit()
                new_id = user.id
                registry.remove()
                return new_id
            ''',
            "clean-up is needed only when all went well",
            keeps=2,
        ),
        wrong(
            "swallows-the-error",
            '''
            def worker(registry, name):
                session = registry()
                try:
                    user = User(name=name)
                    session.add(user)
                    session.commit()
                    return user.id
                except Exception:
                    session.rollback()
                    return None
                finally:
                    registry.remove()
            ''',
            "a failure is handled once it is rolled back",
            keeps=2,
        ),
        wrong(
            "a-plain-session",
            '''
            def worker(registry, name):
                with Session(engine) as session:
                    user = User(name=name)
                    session.add(user)
                    session.commit()
                    return user.id
            ''',
            "the registry is optional in a thread",
            keeps=2,
        ),
        wrong(
            "reads-the-id-after-remove",
            '''
            def worker(registry, name):
                session = registry()
                try:
                    user = User(name=name)
                    session.add(user)
                    session.commit()
                finally:
                    registry.remove()
                return user.id
            ''',
            "a committed object keeps its values after its session is removed",
        ),
    ],
    "sharing": [
        correct(
            "merge-then-expunge",
            '''
            def share_between_sessions(engine):
                user = User(name="Jessica")
                with Session(engine) as first, Session(engine) as second:
                    first.add(user)
                    try:
                        second.add(user)
                    except InvalidRequestError as error:
                        return error


            def move_user(user, source, target):
                moved = target.merge(user)
                source.expunge(user)
                return moved
            ''',
        ),
        correct(
            "close-by-hand",
            '''
            def share_between_sessions(engine):
                first, second = Session(engine), Session(engine)
                user = User(name="Ada")
                first.add(user)
                try:
                    second.add(user)
                except Exception as error:
                    return error
                finally:
                    first.close()
                    second.close()


            def move_user(user, source, target):
                if user in source:
                    source.expunge(user)
                target.add(user)
                return user
            ''',
        ),
        correct(
            "object-session",
            '''
            from sqlalchemy.orm import object_session


            def share_between_sessions(engine):
                with Session(engine) as first:
                    ada = User(name="Ada")
                    first.add(ada)
                    with Session(engine) as second:
                        try:
                            second.add(ada)
                        except InvalidRequestError as refused:
                            return refused


            def move_user(user, source, target):
                object_session(user).expunge(user)
                target.add(user)
                return user
            ''',
        ),
        wrong(
            "add-to-the-target-only",
            '''
            def share_between_sessions(engine):
                user = User(name="Jessica")
                with Session(engine) as first, Session(engine) as second:
                    first.add(user)
                    try:
                        second.add(user)
                    except InvalidRequestError as error:
                        return error


            def move_user(user, source, target):
                target.add(user)
                return user
            ''',
            "add() moves an object from the session that holds it",
        ),
        wrong(
            "merge-without-expunge",
            '''
            def share_between_sessions(engine):
                user = User(name="Jessica")
                with Session(engine) as first, Session(engine) as second:
                    first.add(user)
                    try:
                        second.add(user)
                    except InvalidRequestError as error:
                        return error


            def move_user(user, source, target):
                return target.merge(user)
            ''',
            "merge() moves the object",
        ),
        wrong(
            "a-made-up-error",
            '''
            def share_between_sessions(engine):
                return InvalidRequestError("Object is already attached to session 1 (this is 2)")


            def move_user(user, source, target):
                source.expunge(user)
                target.add(user)
                return user
            ''',
            "the error can be described instead of provoked",
            keeps=1,
        ),
        wrong(
            "make-transient-to-move",
            '''
            from sqlalchemy.orm import make_transient


            def share_between_sessions(engine):
                user = User(name="Jessica")
                with Session(engine) as first, Session(engine) as second:
                    first.add(user)
                    try:
                        second.add(user)
                    except InvalidRequestError as error:
                        return error


            def move_user(user, source, target):
                source.expunge(user)
                make_transient(user)
                target.add(user)
                return user
            ''',
            "an object made transient is the same row, ready for another session",
            keeps=1,
        ),
    ],
}
